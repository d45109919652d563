from codepeft.cli import main

main()
