"""The subcommands of ``mtdnn``, one module each, all of one shape::

    add_parser(subparsers) -> None   # register the command, its flags and its help
    run(args) -> int                 # do it; the exit code

``mtdnn.cli`` holds the table of them (``COMMANDS``) and the entry point. What several commands
share lives beside them and imports no command: ``config_flags.py`` (the flags generated from
:class:`mtdnn.config.TrainConfig`, and the config they give) and ``common.py`` (the help
formatter, the metrics table, the run report of a training).
"""
