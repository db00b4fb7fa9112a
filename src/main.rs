fn main() {
    rkinfer::cli::init_logging();
    let cli = rkinfer::cli::parse_args();
    if let Err(e) = rkinfer::cli::run(cli) {
        eprintln!("error: {e}");
        std::process::exit(1);
    }
}
