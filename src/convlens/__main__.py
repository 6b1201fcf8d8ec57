"""python -m convlens"""

from convlens.cli import main

main()
