from examples.window.cli import main

main()
