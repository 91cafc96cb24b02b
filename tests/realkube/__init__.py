"""The real-cluster tier: a real control plane built from Go modules, process-kubelet nodes."""
