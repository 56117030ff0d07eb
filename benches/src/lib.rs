//! Benchmark harness support (see `cargo xtask bench`).
