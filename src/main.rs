use clap::Parser;

fn main() {
    let cli = switchyard::cli::Cli::parse();
    std::process::exit(switchyard::cli::run(cli));
}
