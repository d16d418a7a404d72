from kdprune.cli import main

main()
