"""The forward algorithm, forward-backward and Viterbi decoding for hidden Markov models, over a leading batch
of S parameter values: log p(x_1..T) by the sequential recursion in log space or by a parallel scan, the
forward variables and state marginals in log space, the most probable path by max-product, and the
E-step (state marginals and expected transition counts) by normalised recursions in probability space,
or as the gradient of the forward algorithm (Eisner 2016), chosen by size and device as measured
(``benchmarks/hmm_forward_backward.py``). :class:`~ppgen.models.bayesian.hmm.HMM` computes its likelihood,
its state marginals, its decoding and its EM statistics with them.

References:
    Rabiner (1989), A tutorial on hidden Markov models and selected applications in speech recognition,
    Proc. IEEE 77, 257-286.
    Viterbi (1967), Error bounds for convolutional codes and an asymptotically optimum decoding
    algorithm, IEEE Trans. Information Theory 13, 260-269.
    Eisner (2016), Inside-outside and forward-backward algorithms are just backprop, EMNLP workshop on
    structured prediction.
"""

from __future__ import annotations

import torch


def _log_matmul_exp(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """log(exp(a) @ exp(b)) over the last two axes, stable."""
    return torch.logsumexp(a[..., :, :, None] + b[..., None, :, :], -2)


def forward_scan(e: torch.Tensor, log_initial: torch.Tensor, log_transition: torch.Tensor) -> torch.Tensor:
    """log p(x_1..T) (S, N) from log emission densities ``e`` (S, N, T, K), log initial probabilities
    (S, K) and log transition matrices (S, K, K), by the parallel-scan form of the forward algorithm:
    the recursion alpha_t = (alpha_{t-1} A) * e_t is a product of the matrices M_t = A diag(e_t), and
    products are associative, so they are multiplied pairwise in log space, ceil(log2 T) rounds of
    batched operations instead of T sequential ones."""
    mats = log_transition[:, None, None] + e[:, :, 1:, None, :]  # (S, N, T-1, K, K): log A_ij + log e_t(j)
    while mats.shape[2] > 1:
        half = mats.shape[2] // 2
        paired = _log_matmul_exp(mats[:, :, 0 : 2 * half : 2], mats[:, :, 1 : 2 * half : 2])
        mats = torch.cat([paired, mats[:, :, 2 * half :]], 2)
    alpha = log_initial[:, None] + e[:, :, 0]  # (S, N, K)
    if mats.shape[2] == 1:
        alpha = torch.logsumexp(alpha[..., :, None] + mats[:, :, 0], -2)
    return torch.logsumexp(alpha, -1)


def forward_log(e: torch.Tensor, log_initial: torch.Tensor, log_transition: torch.Tensor) -> torch.Tensor:
    """The same number by the sequential recursion in log space (Rabiner 1989, eq. 19-21, in logs)."""
    alpha = log_initial[:, None] + e[:, :, 0]
    log_a = log_transition[:, None]
    for t in range(1, e.shape[2]):
        alpha = torch.logsumexp(alpha[..., :, None] + log_a, -2) + e[:, :, t]
    return torch.logsumexp(alpha, -1)


def forward_variables(e: torch.Tensor, log_initial: torch.Tensor, log_transition: torch.Tensor) -> torch.Tensor:
    """The log forward variables log p(x_1..t, z_t = k) (S, N, T, K) of the sequential recursion in log
    space, from log emission densities ``e`` (S, N, T, K), log initial probabilities (S, K) and log
    transition matrices (S, K, K)."""
    log_a = log_transition[:, None]  # (S, 1, K, K)
    alpha = [log_initial[:, None] + e[:, :, 0]]
    for t in range(1, e.shape[2]):
        alpha.append(torch.logsumexp(alpha[-1][..., :, None] + log_a, -2) + e[:, :, t])
    return torch.stack(alpha, 2)


def smoothed_marginals(e: torch.Tensor, log_initial: torch.Tensor, log_transition: torch.Tensor) -> torch.Tensor:
    """The state marginals p(z_t = k | x_1..T) (S, N, T, K) by the forward and backward recursions in log
    space (Rabiner 1989), from the same arguments as :func:`forward_variables`."""
    log_alpha = forward_variables(e, log_initial, log_transition)
    log_a = log_transition[:, None]
    beta = [torch.zeros_like(log_alpha[:, :, 0])]
    for t in range(e.shape[2] - 1, 0, -1):
        beta.append(torch.logsumexp(log_a + (e[:, :, t] + beta[-1])[..., None, :], -1))
    log_beta = torch.stack(beta[::-1], 2)
    return torch.softmax(log_alpha + log_beta, -1)


def viterbi_path(e: torch.Tensor, log_initial: torch.Tensor, log_transition: torch.Tensor) -> torch.Tensor:
    """The most probable state path of each sequence (N, T) by max-product dynamic programming (Viterbi
    1967; Rabiner 1989), for one parameter value: log emission densities ``e`` (N, T, K), log
    initial probabilities (K,) and the log transition matrix (K, K)."""
    delta = log_initial + e[:, 0]
    back = []
    for t in range(1, e.shape[1]):
        scores = delta[:, :, None] + log_transition  # (N, K_from, K_to)
        delta, arg = scores.max(1)
        delta = delta + e[:, t]
        back.append(arg)
    path = [delta.argmax(-1)]
    for arg in reversed(back):
        path.append(arg.gather(1, path[-1][:, None])[:, 0])
    return torch.stack(path[::-1], 1)


#: The scaled recursion is exact to rounding while every transition probability is at least this (see
#: :func:`_forward_backward_scaled`); below it the E-step runs in log space.
SCALED_MIN_TRANSITION = 1e-100


def forward_backward(e: torch.Tensor, log_initial: torch.Tensor, log_transition: torch.Tensor,
                     method: str = "auto") -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The E-step of an HMM for S parameter values at once: log p(x_n) (S, N), the state marginals
    gamma_t(k) = p(z_t = k | x_n) (S, N, T, K) and the expected transition counts
    sum_{n, t} p(z_{t-1} = i, z_t = j | x_n) (S, K, K), from log emission densities ``e`` (S, N, T, K).

    ``method``:

    - ``scaled``: the forward and backward recursions in probability space, each step normalised
      (Rabiner 1989, section V.A): a batched matrix product per step. Exact to rounding while the
      transition probabilities are not astronomically small (a state's forward probability can fall
      below the float64 range relative to the best state only if it is more than 700 nats less
      likely, and it can then matter only if a later transition out of the best state costs as much);
      with any transition probability below :data:`SCALED_MIN_TRANSITION`, or a normaliser that
      underflows, the call runs ``log`` instead.
    - ``log``: the sequential forward recursion in log space, and the backward pass as its gradient
      (the marginals are the derivatives of log p(x) with respect to the log emission densities, the
      transition counts those with respect to the log transition probabilities; Eisner 2016).
    - ``scan``: the parallel-scan forward algorithm (:func:`forward_scan`) and its gradient, in
      ceil(log2 T) batched rounds: more arithmetic (K^3 per step), far fewer sequential operations.
    - ``auto``: by size and device, as measured (see :func:`choose_method`): on a CPU ``scan`` for a
      few long sequences, where the per-step overhead of the recursion dominates, ``scaled`` otherwise.

    References: Eisner (2016), Inside-outside and forward-backward algorithms are just backprop, EMNLP
    workshop on structured prediction; Rabiner (1989).
    """
    if method == "auto":
        method = choose_method(*e.shape, device=e.device)
    if method == "scaled":
        out = _forward_backward_scaled(e, log_initial, log_transition)
        if out is not None:
            return out
        method = "log"
    if method not in ("log", "scan"):
        raise ValueError(f"forward_backward: method must be auto, scaled, log or scan, got {method!r}")
    forward = forward_log if method == "log" else forward_scan
    with torch.enable_grad():
        e_ = e.detach().requires_grad_()
        a_ = log_transition.detach().requires_grad_()
        ll = forward(e_, log_initial.detach(), a_)
        gamma, xi = torch.autograd.grad(ll.sum(), [e_, a_], allow_unused=True)
    if xi is None:  # T = 1: no transitions
        xi = torch.zeros_like(log_transition)
    return ll.detach(), gamma, xi


#: The scan keeps about S N T K^3 numbers for its gradient; beyond this many ``auto`` does not pick it.
SCAN_MAX_NUMBERS = 2**27


def choose_method(s: int, n: int, t: int, k: int, device: torch.device | None = None) -> str:
    """``scan`` or ``scaled`` for S parameter values, N sequences of T steps and K states.

    On a CPU (``benchmarks/hmm_forward_backward.py``, results/hmm_forward_backward.md): each step of the
    scaled recursion costs a fixed overhead of some 40 microseconds plus time in proportion to S N K^2,
    the scan time in proportion to S N T K^3 with no per-step overhead; the scan was faster only for a
    batch of a few sequences (S N K at most 30: one or ten sequences of 1,000 to 10,000 steps with 3
    states, one with 8) and at least some tens of steps, the scaled recursion everywhere else (2,000
    sequences of 200 steps: 14 times faster). On a GPU the T sequential steps are T kernel launches
    each, which the scan replaces by ceil(log2 T) rounds, so it takes the scan while its memory stays
    below :data:`SCAN_MAX_NUMBERS` (not measured here: no GPU was at hand)."""
    fits = s * n * t * k**3 <= SCAN_MAX_NUMBERS
    if device is not None and torch.device(device).type == "cuda":
        return "scan" if fits else "scaled"
    return "scan" if (s * n * k <= 32 and t >= 32 and fits) else "scaled"


def _forward_backward_scaled(e: torch.Tensor, log_initial: torch.Tensor, log_transition: torch.Tensor,
                             ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor] | None:
    """:func:`forward_backward` by the normalised recursions, or None where they cannot promise an
    exact result (a transition probability below :data:`SCALED_MIN_TRANSITION`, a normaliser of 0).
    Everything is laid out time first, (T, S, N, K), so that each step works on contiguous memory."""
    a = torch.exp(log_transition)  # (S, K, K)
    if bool((a < SCALED_MIN_TRANSITION).any()):
        return None
    s, n, t, k = e.shape
    et = e.permute(2, 0, 1, 3).contiguous()  # (T, S, N, K)
    peak = et.amax(-1, keepdim=True)
    pe = torch.exp(et - peak)  # emission densities relative to the best state at each step: max 1
    alpha = torch.empty_like(pe)
    norm = torch.empty(t, s, n, 1, dtype=e.dtype, device=e.device)
    torch.mul(torch.exp(log_initial)[:, None, :], pe[0], out=alpha[0])
    for i in range(t):
        if i > 0:
            torch.bmm(alpha[i - 1], a, out=alpha[i])
            alpha[i].mul_(pe[i])
        torch.sum(alpha[i], -1, keepdim=True, out=norm[i])
        alpha[i].div_(norm[i])
    if not bool((norm > 0).all()) or not bool(torch.isfinite(norm).all()):
        return None
    ll = (torch.log(norm) + peak).sum(0)[..., 0]  # (S, N)
    pe.div_(norm)  # e_t / c_t, what the backward recursion and the pair marginals use
    beta = torch.empty_like(pe)
    beta[t - 1] = 1.0
    a_t = a.mT
    for i in range(t - 2, -1, -1):
        torch.bmm(pe[i + 1] * beta[i + 1], a_t, out=beta[i])
    # xi_ij = A_ij sum_{n, t >= 1} alpha_{t-1}(i) e_t(j) beta_t(j) / c_t, one matrix product over (n, t).
    left = alpha[:-1].permute(1, 3, 0, 2).reshape(s, k, (t - 1) * n)
    right = (pe[1:] * beta[1:]).permute(1, 0, 2, 3).reshape(s, (t - 1) * n, k)
    xi = a * (left @ right)
    gamma = alpha.mul_(beta)  # (T, S, N, K); alpha is not needed any more
    return ll, gamma.permute(1, 2, 0, 3), xi
