"""Speed benchmarks as library functions (the `croma bench` subcommands call them)."""
