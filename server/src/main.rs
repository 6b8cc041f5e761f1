//! The `rackseed` binary: parses the command line and hands over to `rackseed::cli`.

fn main() -> std::process::ExitCode {
    rackseed::cli::main()
}
