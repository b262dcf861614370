"""Prompt templates of the text side (docs/reference-behaviour.md §5.2). "{}" is replaced by the class name; the
strings are used verbatim, including the missing final periods of templates 2-5."""
from typing import List, Optional

from .safe_io import InputError, read_json_file

VILD_TEMPLATES: List[str] = [
    "a photo of a {}.",
    "This is a photo of a {}",
    "There is a {} in the scene",
    "There is the {} in the scene",
    "a photo of a {} in the scene",
    "a photo of a small {}.",
    "a photo of a medium {}.",
    "a photo of a large {}.",
    "This is a photo of a small {}.",
    "This is a photo of a medium {}.",
    "This is a photo of a large {}.",
    "There is a small {} in the scene.",
    "There is a medium {} in the scene.",
    "There is a large {} in the scene.",
]

TEMPLATE_SETS = ("vild", "imagenet", "predefined")  # predefined: the config's list


def load_templates(template_set: str, templates_file: Optional[str] = None) -> List[str]:
    """The vild set is built in. Other sets (imagenet's 80 prompts) come from a JSON file that is
    either a list of strings or an object with the set's name as key."""
    if templates_file is None:
        if template_set == "vild":
            return list(VILD_TEMPLATES)
        raise ValueError(
            f"template set {template_set!r} needs --templates-file "
            "(a JSON list, or an object with a list under that name)"
        )
    try:
        data = read_json_file(templates_file, "templates file")
    except InputError as e:
        raise ValueError(str(e)) from None
    if isinstance(data, dict):
        if template_set not in data:
            raise ValueError(f"{templates_file}: no template list named {template_set!r}")
        data = data[template_set]
    if not isinstance(data, list) or not data or not all(isinstance(t, str) and t.count("{}") == 1 for t in data):
        raise ValueError(
            f"{templates_file}: templates must be a non-empty list of strings " "with exactly one '{}' each"
        )
    return list(data)
