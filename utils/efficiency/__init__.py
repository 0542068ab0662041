"""What a model costs: MACs, firing rates, SOPs and energy; wall-clock and memory benchmarks."""
