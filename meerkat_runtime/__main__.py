from meerkat_runtime.cli import main

main()
