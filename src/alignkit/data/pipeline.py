"""From a ``DataConfig`` to tokenized train and eval sets, with every check done before training."""

from __future__ import annotations

import logging

from alignkit.data.schema import TokenizedExample

log = logging.getLogger("alignkit")


def resolve_data_path(path: str) -> str:
    """``alignkit:NAME`` names a small dataset shipped inside the package (``alignkit/assets``)."""
    if path.startswith("alignkit:"):
        from importlib.resources import files

        from alignkit.errors import ConfigError

        asset = files("alignkit") / "assets" / path.split(":", 1)[1]
        if not asset.is_file():
            raise ConfigError(f"{path}: no built-in dataset of that name")
        return str(asset)
    return path


def load_split(data_cfg, *, seed: int = 0) -> tuple[list, list]:
    """Load and validate ``data.train`` and the held-out set (``data.eval``, or ``eval_size`` rows of
    ``data.train`` split off with ``seed``), as :class:`~alignkit.data.schema.Example` rows."""
    from alignkit.data.formats import load_examples, split_train_eval
    from alignkit.errors import ConfigError

    if not data_cfg.train:
        raise ConfigError("data.train: no training data given; set data.train to a file, folder or Hub id")
    common = dict(format=data_cfg.format, skip_bad_rows=data_cfg.skip_bad_rows, log=log.warning)
    train = load_examples(resolve_data_path(data_cfg.train), split=data_cfg.split, max_rows=data_cfg.max_rows or None, **common)
    if data_cfg.eval:
        held_out = load_examples(resolve_data_path(data_cfg.eval), split=data_cfg.eval_split, **common)
    elif data_cfg.eval_size > 0:
        size = data_cfg.eval_size
        kwargs = {"eval_fraction": size} if size < 1 else {"eval_size": int(size)}
        train, held_out = split_train_eval(train, seed=seed, **kwargs)
    else:
        held_out = []
    return train, held_out


def load_tokenized(data_cfg, tokenizer, *, seed: int = 0, formats: tuple[str, ...] = ()) -> tuple[
    list[TokenizedExample], list[TokenizedExample]
]:
    """Load, validate and tokenize ``data.train`` (and ``data.eval`` or a held-out slice)."""
    from alignkit.data.tokenize import TokenizeConfig, tokenize_examples

    train, held_out = load_split(data_cfg, seed=seed)
    tok_cfg = TokenizeConfig(max_prompt_length=data_cfg.max_prompt_length, max_length=data_cfg.max_length)
    skip = data_cfg.skip_bad_rows
    return (
        tokenize_examples(train, tokenizer, tok_cfg, skip_bad_rows=skip),
        tokenize_examples(held_out, tokenizer, tok_cfg, skip_bad_rows=skip),
    )
