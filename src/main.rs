//! The `baton` binary: parses arguments and hands over to the library.

/// mimalloc rather than the system allocator: the engine allocates and frees small records,
/// events and messages on every transition from several threads, where glibc's malloc spent
/// a tenth of the daemon's CPU (docs/PERFORMANCE.md).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() {
    std::process::exit(baton::cli::main());
}
