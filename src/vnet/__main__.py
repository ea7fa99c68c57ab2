from vnet.cli.main import main

main()
