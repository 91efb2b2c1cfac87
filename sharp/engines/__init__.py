"""How SHARP runs fast: the fused C kernels and their binder, fused Adam, device set-up."""
