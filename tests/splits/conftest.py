import os
import sys

# make the plain helper module `splitref` importable whatever pytest's import mode
sys.path.insert(0, os.path.dirname(__file__))
