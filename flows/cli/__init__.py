"""The `digitflow` command line.

main      the click group: registers the commands, turns errors into one line each
runner    what a command that runs a flow does (settings, embedded server, one-line errors)
train     digitflow train       the training pipeline
predict   digitflow predict     batch prediction of an image folder
models    digitflow models      list and show published versions
report    digitflow report      an HTML page about a version or a predictions file
serve     digitflow serve       training (and inbox scoring) on a schedule
"""
