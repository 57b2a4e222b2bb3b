"""Small Llama checkpoints made offline, so the embedded default runs with no Hub at all.

A generated checkpoint is a real Hugging Face checkpoint folder: ``config.json`` for
``LlamaForCausalLM`` with random weights drawn from a fixed seed (``model.safetensors``), and
a real tokenizer, a byte-level BPE trained on a prompt corpus with the ``tokenizers`` library
(``tokenizer.json`` + ``tokenizer_config.json`` with a Llama 3 style chat template), so
``AutoTokenizer`` and ``AutoModelForCausalLM`` load it like any downloaded model. The text it
generates is not prose (the weights are random); point ``model:`` at a Hub repository for that.

Same inputs, same bytes: the folder lives at ``<root>/<key>``, where ``key`` hashes the size
parameters, the seed, the corpus bytes and the library versions that write the files, and
it is made once (written beside, then renamed into place) and reused after.

torch, transformers and tokenizers are imported inside the functions that need them.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import threading
from pathlib import Path
from typing import Any

from expert_deploy.artifacts.corpus import read_corpus
from expert_deploy.atomic_file import staging_dir
from expert_deploy.checkpoints.checkpoint import Checkpoint, sha256_of, snapshot_files
from expert_deploy.checkpoints.verify import verify_checkpoint
from expert_deploy.errors import CheckpointError, ExpertDeployError
from expert_deploy.inventory.models import GeneratedModel, ModelSource

#: Serialises transformers' process-wide progress-bar switch (see write_checkpoint).
_PROGRESS_BAR_LOCK = threading.Lock()

#: Bump when the files this module writes change for the same inputs.
GENERATOR_VERSION = 2

BOS = "<|begin_of_text|>"
EOS = "<|end_of_text|>"
EOT = "<|eot_id|>"
HEADER_START = "<|start_header_id|>"
HEADER_END = "<|end_header_id|>"
#: Llama 3's special tokens, at the start of the vocabulary (ids 0…4).
SPECIAL_TOKENS = (BOS, EOS, HEADER_START, HEADER_END, EOT)

#: Standard deviation of the random weights. Llama's own 0.02 gives near-uniform logits that
#: repeat one token under greedy decoding; wider weights make the output depend on the prompt.
WEIGHT_STD = 0.1

#: Llama 3's chat layout: a header per role, each turn closed by <|eot_id|>.
CHAT_TEMPLATE = (
    "{{ bos_token }}{% for message in messages %}"
    "{{ '<|start_header_id|>' + message['role'] + '<|end_header_id|>\\n\\n' }}"
    "{{ message['content'] | trim }}{{ '<|eot_id|>' }}{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|start_header_id|>assistant<|end_header_id|>\\n\\n' }}"
    "{% endif %}"
)


def _missing(error: ModuleNotFoundError) -> CheckpointError:
    return CheckpointError(
        f"generating a checkpoint needs {error.name}: pip install torch==2.13.0 "
        "(the CPU build) and then 'expert-deploy[local]'"
    )


def _versions() -> dict[str, str]:
    """Versions of the libraries whose output bytes the checkpoint holds."""
    try:
        import tokenizers
        import torch
        import transformers
    except ModuleNotFoundError as error:
        raise _missing(error) from None
    return {
        "tokenizers": tokenizers.__version__,
        "torch": torch.__version__,
        "transformers": transformers.__version__,
    }


def _corpus_texts(path: Path, label: str) -> list[str]:
    """The prompts the tokenizer of ``label`` trains on.

    Raises:
        CheckpointError: the corpus is missing or unusable (the message says which line).
    """
    if not path.is_file():
        raise CheckpointError(
            f"{label}: tokenizer corpus {path} not found; set model.generate.corpus to a "
            'JSONL file with one {"text": ...} per line'
        )
    try:
        texts, _ = read_corpus(path, text_field="text", label_field=None)
    except ExpertDeployError as error:
        raise CheckpointError(f"{label}: {error}") from None
    return texts


def generation_key(spec: GeneratedModel, corpus_sha256: str, versions: dict[str, str]) -> str:
    """40 hex digits naming the checkpoint these inputs produce (its "commit")."""
    inputs = {
        "generator": GENERATOR_VERSION,
        "spec": spec.model_dump(mode="json", exclude={"corpus"}),
        "corpus_sha256": corpus_sha256,
        "versions": versions,
    }
    return hashlib.sha256(json.dumps(inputs, sort_keys=True).encode()).hexdigest()[:40]


def train_tokenizer(texts: list[str], vocab_size: int, max_length: int) -> Any:
    """A byte-level BPE ``PreTrainedTokenizerFast`` trained on ``texts`` (Llama 3 specials).

    Byte-level: every string, in any script, encodes and decodes back unchanged.
    """
    try:
        from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
        from transformers import PreTrainedTokenizerFast
    except ModuleNotFoundError as error:
        raise _missing(error) from None
    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        min_frequency=2,
        special_tokens=list(SPECIAL_TOKENS),
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tokenizer.train_from_iterator(texts, trainer=trainer)
    # Like Llama 3: <|begin_of_text|> before every encoded text; byte offsets kept intact.
    tokenizer.post_processor = processors.Sequence(
        [
            processors.ByteLevel(trim_offsets=False),
            processors.TemplateProcessing(
                single=f"{BOS} $A",
                pair=f"{BOS} $A {BOS} $B",
                special_tokens=[(BOS, tokenizer.token_to_id(BOS))],
            ),
        ]
    )
    fast_tokenizer: Any = PreTrainedTokenizerFast  # untyped in transformers
    return fast_tokenizer(
        tokenizer_object=tokenizer,
        bos_token=BOS,
        eos_token=EOT,
        pad_token=EOS,
        model_max_length=max_length,
        chat_template=CHAT_TEMPLATE,
        clean_up_tokenization_spaces=False,
    )


def _random_model(spec: GeneratedModel, tokenizer: Any) -> Any:
    """``LlamaForCausalLM`` with weights drawn from ``spec.seed``."""
    try:
        import torch
        from transformers import LlamaConfig, LlamaForCausalLM
    except ModuleNotFoundError as error:
        raise _missing(error) from None
    config = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=spec.hidden_size,
        intermediate_size=spec.intermediate_size,
        num_hidden_layers=spec.num_layers,
        num_attention_heads=spec.num_heads,
        num_key_value_heads=spec.num_kv_heads,
        max_position_embeddings=spec.max_position_embeddings,
        tie_word_embeddings=True,
        bos_token_id=tokenizer.convert_tokens_to_ids(BOS),
        eos_token_id=[tokenizer.convert_tokens_to_ids(t) for t in (EOS, EOT)],
        pad_token_id=tokenizer.convert_tokens_to_ids(EOS),
    )
    model: Any = LlamaForCausalLM(config)
    # Random weights pick any token; a lone byte of a multi-byte character (or a control
    # byte) then prints as "\ufffd". The corpus is ASCII, so only these bare byte tokens can
    # do that: generate() is told never to pick them (generation_config.json).
    model.generation_config.suppress_tokens = _unprintable_tokens(tokenizer)
    # Redraw every weight from a private generator, in name order: the bytes then depend
    # only on the seed, even when several checkpoints are made in parallel threads (the
    # global RNG transformers initialises from is shared by all of them).
    generator = torch.Generator().manual_seed(spec.seed)
    with torch.no_grad():
        for name, parameter in sorted(model.named_parameters()):
            if name.endswith("norm.weight"):
                parameter.fill_(1.0)
            else:
                parameter.normal_(0.0, WEIGHT_STD, generator=generator)
    return model.eval()


def _unprintable_tokens(tokenizer: Any) -> list[int]:
    """Ids of tokens that decode, alone, to U+FFFD or a control character other than \\n."""
    decoder = tokenizer.backend_tokenizer.decoder
    special = set(tokenizer.all_special_ids)
    ids = []
    for token, token_id in sorted(tokenizer.get_vocab().items(), key=lambda item: item[1]):
        text = decoder.decode([token])
        if token_id not in special and any(c == "\ufffd" or (c < " " and c != "\n") for c in text):
            ids.append(token_id)
    return ids


def write_checkpoint(spec: GeneratedModel, texts: list[str], target: Path) -> None:
    """Write the checkpoint of ``spec`` (tokenizer trained on ``texts``) into ``target``."""
    tokenizer = train_tokenizer(texts, spec.vocab_size, spec.max_position_embeddings)
    model = _random_model(spec, tokenizer)
    from transformers.utils import logging

    hf_logging: Any = logging  # untyped in transformers
    target.mkdir(parents=True, exist_ok=True)
    # save_pretrained draws a progress bar per shard; one tiny shard is not worth a bar. The
    # switch is process-wide and fetch_all generates in threads: toggle it under one lock.
    with _PROGRESS_BAR_LOCK:
        hf_logging.disable_progress_bar()
        try:
            model.save_pretrained(target)
        finally:
            hf_logging.enable_progress_bar()
    tokenizer.save_pretrained(target)
    _portable_tokenizer_class(target / "tokenizer_config.json")


def _portable_tokenizer_class(path: Path) -> None:
    """Name the fast-tokenizer class every transformers release knows.

    transformers 5 writes its new ``TokenizersBackend`` name, which 4.x (still in many
    serving images) cannot resolve; ``PreTrainedTokenizerFast`` loads in both.
    """
    config = json.loads(path.read_text(encoding="utf-8"))
    config["tokenizer_class"] = "PreTrainedTokenizerFast"
    path.write_text(json.dumps(config, indent=2, sort_keys=True) + "\n", encoding="utf-8")


def generate_checkpoint(model: ModelSource, *, corpus: Path, root: Path) -> Checkpoint:
    """Make (or reuse) the checkpoint that ``model.generate`` describes, under ``root``.

    ``corpus`` is the tokenizer's training text when ``model.generate.corpus`` is unset.

    Raises:
        CheckpointError: torch/transformers are missing, the corpus is unusable, or the
            folder cannot be written; nothing made earlier is touched.
    """
    spec = model.generate
    if spec is None:
        raise ValueError(f"{model.repo} is a Hub checkpoint, not a generated one")
    corpus = spec.corpus or corpus
    texts = _corpus_texts(corpus, model.repo)
    key = generation_key(spec, sha256_of(corpus), _versions())
    target = root / key
    cached = target.is_dir()
    if not cached:
        try:
            root.mkdir(parents=True, exist_ok=True)
            staging = staging_dir(root, f".{key[:12]}-")
        except OSError as error:
            raise CheckpointError(
                f"cannot write generated checkpoints under {root} ({error.strerror or error}); "
                "choose a writable --workdir"
            ) from None
        try:
            write_checkpoint(spec, texts, staging)
            staging.rename(target)
        except OSError as error:
            if not target.is_dir():  # else another fetch renamed the same key into place first
                raise CheckpointError(
                    f"cannot write the generated checkpoint {target} ({error.strerror or error}); "
                    "free some disk space or choose another --workdir"
                ) from None
        finally:
            shutil.rmtree(staging, ignore_errors=True)
    verify_checkpoint(target)
    files = tuple((name, sha256_of(target / name)) for name in snapshot_files(target))
    return Checkpoint(model.repo, model.revision, key, target, files, cached=cached)
