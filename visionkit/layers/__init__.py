"""Custom layers the classic architectures need. Each uses keras.ops only (TensorFlow and JAX
backends) and is registered as Keras-serializable, so `.keras` files load with safe_mode=True."""
