"""Options: the checked dataclasses whose fields become command-line flags
(a strategy's options, a fine-tuning method family's options)."""

from __future__ import annotations

from dataclasses import dataclass, field, fields, make_dataclass


def flag(default, help: str):
    """A config field that becomes a command-line flag, with its `--help` text (what it does and its valid values)."""
    return field(default=default, metadata={"help": help})


def check_counts(settings, *names: str) -> None:
    """Raise unless each field `names` of `settings` is >= 1."""
    for name in names:
        if getattr(settings, name) < 1:
            raise ValueError(f"{name} must be >= 1, got {getattr(settings, name)}")


@dataclass(frozen=True)
class Options:
    """A set of options, checked when made (so a made one is valid). Subclasses add fields with
    defaults, named as their flags, and override `check`."""

    def __post_init__(self):
        self.check()

    def check(self) -> None:
        """Raise a one-line ValueError naming the option that is out of range."""

    @classmethod
    def of(cls, settings) -> "Options":
        """These options read from `settings`, any object with an attribute per field (a flat config)."""
        return cls(**{f.name: getattr(settings, f.name) for f in fields(cls)})


def flat_config(name: str, settings: type, option_classes, doc: str) -> type:
    """A dataclass `name`: the fields of `settings` (a dataclass) followed by those of every
    `Options` class in `option_classes`, flat and each once, so that each is one flag and one
    key of results.json's config. Two classes may share a field (one extending another) but not
    give it two defaults."""
    seen = {}
    for options in option_classes:
        for option in fields(options):
            if option.name in seen and seen[option.name].default != option.default:
                raise TypeError(f"{options.__name__} gives option {option.name} another default")
            seen.setdefault(option.name, option)
    config = make_dataclass(name, [(o.name, o.type, field(default=o.default, metadata=o.metadata)) for o in seen.values()],
                            bases=(settings,), namespace={"__doc__": doc})
    config.__module__ = settings.__module__
    return config
