"""Errors the CLI turns into one line ``error: ...`` and exit code 2."""


class CromaError(Exception):
    """A user-facing error: bad configuration, bad checkpoint, bad flag value.

    The message must say what is wrong and what to do about it.
    """


class NonFiniteLossError(CromaError):
    """Training produced a NaN or infinite loss."""


def torch_load_problem(exc: BaseException) -> str:
    """Why ``torch.load(path, weights_only=True)`` failed, in a few words fit for one error line.

    torch's own messages are several sentences (and the one for a file holding arbitrary Python
    objects suggests ``weights_only=False``, which croma never does); an empty file raises a bare
    ``EOFError``, a text file a ``KeyError`` holding one byte value.
    """
    import pickle

    text = str(exc)
    if isinstance(exc, pickle.UnpicklingError) and "Weights only load failed" in text:
        import re

        m = re.search(r"GLOBAL\s+([\w.]+)", text)
        if m is None and "Unsupported operand" in text:
            return "not a PyTorch file (torch.save output), or a corrupt one"
        what = f" ({m.group(1)})" if m else ""
        return (f"it holds Python objects other than tensors{what}, which croma never unpickles: save a state dict "
                "of tensors instead")
    if isinstance(exc, EOFError):
        return "the file is empty or truncated"
    if isinstance(exc, RuntimeError) and any(k in text for k in ("zip archive", "PytorchStreamReader", "magic number")):
        return "not a PyTorch file, or a truncated / corrupt one"
    if isinstance(exc, (KeyError, pickle.UnpicklingError, UnicodeDecodeError)):
        return "not a PyTorch file (torch.save output)"
    first = text.strip().splitlines()[0] if text.strip() else type(exc).__name__
    return first[:200]
