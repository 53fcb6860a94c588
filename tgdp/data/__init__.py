"""Data: the analytic Gaussian-mixture testbed and the ECG loaders/simulator."""
