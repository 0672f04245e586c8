//! portico-bench
