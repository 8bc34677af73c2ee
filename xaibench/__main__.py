from xaibench.cli.app import main

main()
