"""Kubernetes test harness: an API emulator built on kmock and a process kubelet."""
