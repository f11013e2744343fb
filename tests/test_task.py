import textwrap

import pytest
import torch
from torch import nn
from torch.utils.data import TensorDataset

import autocompress
from autocompress.errors import AutocompressError, MetricError, TaskError, TaskValidationError
from autocompress.task import load_task, validate_task

from .conftest import FIXTURES


def _task(**overrides) -> autocompress.Task:
    torch.manual_seed(0)
    x, y = torch.randn(20, 4), torch.randint(0, 3, (20,))
    fields = dict(name="t", model=nn.Linear(4, 3), train_data=TensorDataset(x[:10], y[:10]),
                  eval_data=TensorDataset(x[10:], y[10:]), example_input=x[:1], metric="accuracy")
    fields.update(overrides)
    return autocompress.Task(**fields)


def _one_line(exc: BaseException) -> str:
    message = str(exc)
    assert "\n" not in message
    assert isinstance(exc, AutocompressError)
    return message


def test_a_valid_task_passes_validation():
    task = _task()
    assert validate_task(task) is task


def test_model_that_is_not_a_module():
    with pytest.raises(TaskValidationError) as info:
        validate_task(_task(model={"weights": 1}))
    assert "Task.model is a dict; a torch.nn.Module" in _one_line(info.value)


def test_empty_eval_set():
    with pytest.raises(TaskValidationError) as info:
        validate_task(_task(eval_data=TensorDataset(torch.empty(0, 4), torch.empty(0, dtype=torch.long))))
    assert "evaluation set is empty (0 samples)" in _one_line(info.value)


def test_example_input_the_model_rejects():
    with pytest.raises(TaskValidationError) as info:
        validate_task(_task(example_input=torch.randn(1, 7)))
    message = _one_line(info.value)
    assert "the model raised RuntimeError on example_input tensor(1, 7)" in message
    assert "an example_input the model accepts" in message


def test_labels_outside_the_output_range():
    x = torch.randn(10, 4)
    with pytest.raises(TaskValidationError) as info:
        validate_task(_task(eval_data=TensorDataset(x, torch.arange(10) % 5)))
    assert "labels range over [0, 4] but the model has 3 outputs" in _one_line(info.value)


def test_unknown_metric_name():
    with pytest.raises(MetricError) as info:
        validate_task(_task(metric="top5"))
    assert "unknown metric 'top5'" in _one_line(info.value)


def test_example_input_of_wrong_type():
    with pytest.raises(TaskValidationError) as info:
        validate_task(_task(example_input=[1, 2, 3]))
    assert "Task.example_input is list" in _one_line(info.value)


def test_task_returning_the_wrong_type():
    with pytest.raises(TaskValidationError) as info:
        validate_task(nn.Linear(2, 2))
    assert "task() returned Linear; an autocompress.Task" in _one_line(info.value)


def test_missing_task_file(tmp_path):
    with pytest.raises(TaskError) as info:
        load_task(str(tmp_path / "nope.py"))
    assert "nope.py' does not exist" in _one_line(info.value)


def test_task_file_that_raises_on_import(tmp_path):
    path = tmp_path / "broken.py"
    path.write_text("raise ValueError('boom at import')\n")
    with pytest.raises(TaskError) as info:
        load_task(str(path))
    assert "raised ValueError on import: boom at import" in _one_line(info.value)


def test_task_file_without_task_function(tmp_path):
    path = tmp_path / "empty.py"
    path.write_text("x = 1\n")
    with pytest.raises(TaskError) as info:
        load_task(str(path))
    assert "defines no task() function" in _one_line(info.value)


def test_task_function_returning_wrong_type(tmp_path):
    path = tmp_path / "wrong.py"
    path.write_text("def task():\n    return 42\n")
    with pytest.raises(TaskValidationError) as info:
        load_task(str(path))
    assert "task() returned int" in _one_line(info.value)


def test_task_function_that_raises(tmp_path):
    path = tmp_path / "raises.py"
    path.write_text("def task():\n    raise KeyError('no data')\n")
    with pytest.raises(TaskError) as info:
        load_task(str(path))
    assert "raised KeyError: 'no data'" in _one_line(info.value)


def test_unknown_builtin_name():
    with pytest.raises(TaskError) as info:
        load_task("digitz")
    assert "unknown task 'digitz'; a built-in name (digits" in _one_line(info.value)


def test_module_function_form(tmp_path, monkeypatch):
    (tmp_path / "my_tasks.py").write_text(textwrap.dedent("""
        import torch
        from torch import nn
        from torch.utils.data import TensorDataset
        import autocompress

        def small():
            x, y = torch.randn(8, 4), torch.tensor([0, 1] * 4)
            return autocompress.Task(name="small", model=nn.Linear(4, 2), train_data=TensorDataset(x, y),
                                     eval_data=TensorDataset(x, y), example_input=x[:1])
    """))
    monkeypatch.syspath_prepend(str(tmp_path))
    assert load_task("my_tasks:small").name == "small"
    with pytest.raises(TaskError) as info:
        load_task("my_tasks:missing")
    assert "has no function 'missing'" in _one_line(info.value)
    with pytest.raises(TaskError) as info:
        load_task("no_such_module_xyz:task")
    assert "module 'no_such_module_xyz' of task" in _one_line(info.value)


def test_file_form_loads_a_dict_input_bert_task():
    task = load_task(str(FIXTURES / "bert_task.py"))
    assert task.name == "tiny-bert" and isinstance(task.example_input, dict)


def test_iterable_train_data_is_streamed_not_shuffled():
    class Stream(torch.utils.data.IterableDataset):
        def __iter__(self):
            for i in range(6):
                yield torch.full((4,), float(i)), torch.tensor(i % 3)

    task = _task(train_data=Stream())
    firsts = [float(x[0, 0]) for x, _ in task.train_loader(batch_size=2)]
    assert firsts == [0.0, 2.0, 4.0]
