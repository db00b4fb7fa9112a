use clap::Parser;

fn main() {
    let cli = rkinfer::cli::Cli::parse();
    if let Err(e) = rkinfer::cli::run(cli) {
        eprintln!("error: {e}");
        std::process::exit(1);
    }
}
