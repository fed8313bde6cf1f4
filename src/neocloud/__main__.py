from neocloud.cli.main import main

main()
