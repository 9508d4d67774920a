"""Energy-based families (RBM, Boltzmann machine, DBN), their cores, AIS and the block-Gibbs MCMC kernel."""
