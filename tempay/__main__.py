from tempay.cli import main

main()
