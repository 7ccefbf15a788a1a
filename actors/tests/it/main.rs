//! The engine's integration tests, as one binary: each file beside this one is a module. One
//! binary links the engine once, and its tests run side by side instead of binary after binary.

#[path = "../../../tests/it/own_process.rs"]
mod own_process;
#[path = "../../../tests/it/require/mod.rs"]
mod require;

mod admission;
mod engine;
mod notifier;
mod procs;
mod shell_env;
mod store_postgres;
