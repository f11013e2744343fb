"""Built-in tasks. Each module defines ``task()``; the names are listed in ``autocompress.task.BUILTIN_TASKS``."""
