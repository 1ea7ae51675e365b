import os

import pytest
import torch


os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
torch.set_num_threads(2)


@pytest.fixture(scope="session")
def tokenizer():
    """Qwen2.5's real tokenizer (rebuilt offline), as every released model uses. Tests must not modify it."""
    from llm_srt.testing import build_qwen2_5_tokenizer

    return build_qwen2_5_tokenizer()


@pytest.fixture(scope="session")
def toy_tokenizer():
    """A small BPE trained on the spot, only for tests that train a model and need a small vocabulary for speed."""
    from llm_srt.testing import build_tiny_tokenizer

    return build_tiny_tokenizer()


@pytest.fixture(scope="session")
def tiny(tokenizer):
    """(model, processor): a random tiny LLM-SRT in eval mode. Tests must not modify it."""
    from llm_srt.testing import build_tiny_model_and_processor

    return build_tiny_model_and_processor(seed=0, tokenizer=tokenizer)


@pytest.fixture(scope="session")
def tiny_folder(tiny, tmp_path_factory):
    """The tiny model and processor saved to a folder (remote code included)."""
    from llm_srt.testing import save_model

    return save_model(*tiny, tmp_path_factory.mktemp("tiny_llm_srt"))


@pytest.fixture
def clips():
    from llm_srt.testing import synthetic_speech

    return [synthetic_speech(0.6 + 0.3 * i, seed=i) for i in range(3)]


@pytest.fixture(scope="session")
def parrot():
    """(model, processor, clips): a tiny model trained in seconds to answer two lines spoken by espeak-ng
    ("I see three red cats." / "Two blue dogs.", into deu and fra: `llm_srt.testing.PARROT_LINES`); real words for
    the live tests. Tests must not modify it."""
    import shutil

    if shutil.which("espeak-ng") is None:
        pytest.skip("espeak-ng (Debian package) not installed")
    from llm_srt.testing import build_parrot_model

    return build_parrot_model()


def pytest_configure(config):
    config.addinivalue_line("markers", "integration: servers, CLI subprocesses, training runs, the browser, vLLM and "
                                       "the demo (tests/integration/ and marked tests); the fast tier is "
                                       "`pytest tests -m 'not integration'`")


def pytest_collection_modifyitems(config, items):
    for item in items:
        if "integration" in item.path.parts:
            item.add_marker(pytest.mark.integration)
