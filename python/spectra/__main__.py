from spectra.cli import main

main()
