"""efctl: the kubectl-style command line for an edgefleet cloud."""
