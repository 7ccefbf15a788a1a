//! The `baton` binary: parses arguments and hands over to the library.

fn main() {
    std::process::exit(baton::cli::main());
}
