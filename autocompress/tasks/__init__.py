"""Built-in tasks. Each of ``digits``, ``mnist``, ``text`` and ``reviews`` defines ``task()``; the names are listed
in ``autocompress.task.BUILTIN_TASKS``. ``files`` (with ``files_data`` and ``files_models``) builds a task from a
model and data files named on the command line, without code."""
