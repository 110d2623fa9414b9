from chatstore.cli import main

main()
