"""``python -m utils.demo``: runs the end-to-end demo (see ``utils.demo.driver``)."""

from utils.demo.driver import main

main()
