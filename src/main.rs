use clap::Parser;

fn main() {
    let cli = switchyard::Cli::parse();
    std::process::exit(switchyard::run(cli));
}
