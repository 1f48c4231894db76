"""Fixtures for the T5 Unigram tokenizer (src/text/t5_unigram.c) and the T5
encoder (src/models/t5.c), made with the real libraries (sentencepiece,
tokenizers, transformers, torch). Deterministic (seeded).

Tokenizer: a real Unigram model (the sentencepiece sdist's
test/botchan_en_unigram_1000.model) with T5's special ids (0 <pad>, 1 </s>,
2 <unk>) and the real nmt_nfkc charsmap (the one T5's spiece.model uses; the
sentencepiece wheel ships it as package_data/nmt_nfkc.bin), written as the
tokenizer.json layout FLUX's reference ran (transformers 4 converter,
ComfyUI's t5xxl tokenizer.json): normalizer [Precompiled, Strip(right),
Replace(" {2,}" -> "▁")], Metaspace(prepend "first"), Unigram unk_id 2,
<extra_id_99>..<extra_id_0> after the pieces, post-processor $A </s>.
A second file is what transformers 5 builds from the same spiece.model
(Precompiled only, WhitespaceSplit + Metaspace "always"). Expected ids come
from `tokenizers` on a few hundred hard strings.

Model: tiny random T5EncoderModel checkpoints (gated-gelu with T5's real
bucket settings and a sequence longer than max_distance; relu with odd sizes,
num_heads * d_kv != d_model), saved sharded F32 and one-file BF16 / F16, and
the outputs transformers computes in F32 from the stored (rounded) weights:
the embeddings, every block's output (forward hooks) and last_hidden_state,
plus the bucket table of T5Attention._relative_position_bucket.

Usage: python tools/make_t5_fixtures.py SENTENCEPIECE_SDIST_DIR [OUT=fixtures/t5]
(the sdist: pip download --no-deps --no-binary :all: sentencepiece==0.2.3)
"""
import json
import os
import random
import sys

import sentencepiece as spm
from sentencepiece import sentencepiece_model_pb2 as pb
from tokenizers import AddedToken, Regex, Tokenizer, normalizers, pre_tokenizers, processors
from tokenizers.models import Unigram

SDIST = sys.argv[1]
OUT = sys.argv[2] if len(sys.argv) > 2 else "fixtures/t5"
os.makedirs(OUT, exist_ok=True)
MAXLEN = 32


def t5_spm_model(path):
    """botchan with T5's special layout and the nmt_nfkc charsmap."""
    m = pb.ModelProto()
    m.ParseFromString(open(os.path.join(SDIST, "test/botchan_en_unigram_1000.model"), "rb").read())
    P = pb.ModelProto.SentencePiece
    m.pieces[0].piece, m.pieces[0].type = "<pad>", P.CONTROL
    m.pieces[1].piece, m.pieces[1].type = "</s>", P.CONTROL
    m.pieces[2].piece, m.pieces[2].type = "<unk>", P.UNKNOWN
    m.trainer_spec.unk_id, m.trainer_spec.bos_id = 2, -1
    m.trainer_spec.eos_id, m.trainer_spec.pad_id = 1, 0
    pkg = os.path.join(os.path.dirname(spm.__file__), "package_data", "nmt_nfkc.bin")
    m.normalizer_spec.name = "nmt_nfkc"
    m.normalizer_spec.precompiled_charsmap = open(pkg, "rb").read()
    open(path, "wb").write(m.SerializeToString())
    return m


def tokenizer_2024(m):
    """transformers 4's SpmConverter + T5Converter output, as ComfyUI/FLUX ship it."""
    vocab = [(p.piece, p.score) for p in m.pieces]
    vocab += [(f"<extra_id_{i}>", 0.0) for i in range(99, -1, -1)]
    tok = Tokenizer(Unigram(vocab, unk_id=2, byte_fallback=False))
    tok.normalizer = normalizers.Sequence(
        [
            normalizers.Precompiled(m.normalizer_spec.precompiled_charsmap),
            normalizers.Strip(left=False, right=True),
            normalizers.Replace(Regex(" {2,}"), "▁"),
        ]
    )
    tok.pre_tokenizer = pre_tokenizers.Metaspace(replacement="▁", prepend_scheme="first", split=True)
    tok.post_processor = processors.TemplateProcessing(
        single=["$A", "</s>"], pair=["$A", "</s>", "$B", "</s>"], special_tokens=[("</s>", 1)]
    )
    specials = ["<pad>", "</s>", "<unk>"] + [f"<extra_id_{i}>" for i in range(99, -1, -1)]
    tok.add_special_tokens([AddedToken(s, normalized=False, special=True) for s in specials])
    return tok


def hard_strings(rng):
    s = [
        "",
        "A photo of a cat sitting on a mat.",
        "Hello world",
        "hello  world",
        "hello   world    again",
        " leading space",
        "   leading spaces",
        "trailing space ",
        "trailing spaces   ",
        "   ",
        " ",
        "tab\tseparated\tvalues",
        "new\nline",
        "crlf\r\nline",
        "lfcr\n\rline",
        "cr\ronly",
        "mixed \t\n  whitespace",
        "no\u00a0break\u00a0space",
        "zero\u200bwidth",
        "soft\u00adhyphen",
        "e\u0301 combining acute",
        "a\u0301\u0302 two marks",
        "\u00e9 precomposed",
        "A\u030a ring",
        "\uff21\u0301 fullwidth with mark",
        "\uff28\uff45\uff4c\uff4c\uff4f fullwidth",
        "\uff11\uff12\uff13 digits",
        "\u2460 circled one",
        "\u2163 roman four",
        "\ufb01 ligature fi",
        "\u00bd half",
        "x\u00b2 superscript",
        "caf\u00e9 na\u00efve r\u00e9sum\u00e9",
        "Stra\u00dfe",
        "\u0130stanbul",
        "\u65e5\u672c\u8a9e\u306e\u6587\u7ae0",
        "\u4e2d\u6587\u5b57\u7b26",
        "\ud55c\uad6d\uc5b4",
        "\u1100\u1161\u11a8 jamo",
        "\u0928\u092e\u0938\u094d\u0924\u0947",
        "\u0645\u0631\u062d\u0628\u0627",
        "\u05e9\u05dc\u05d5\u05dd",
        "\u041f\u0440\u0438\u0432\u0435\u0442",
        "\u0393\u03b5\u03b9\u03ac",
        "emoji \U0001f600 face",
        "family \U0001f468\u200d\U0001f469\u200d\U0001f467",
        "heart \u2764\ufe0f vs",
        "flag \U0001f1ef\U0001f1f5",
        "skin \U0001f44d\U0001f3fd",
        "keycap 1\ufe0f\u20e3",
        "\u2603 snowman",
        "unknown \u2603\u2603\u2603 run",
        "<extra_id_3>",
        "fill <extra_id_3> here",
        "x<extra_id_0>y",
        "<extra_id_0>start",
        "end<extra_id_99>",
        "<extra_id_100> is not special",
        "<extra_id_3 >",
        "literal </s> eos",
        "</s>",
        "</s></s>",
        "<pad> and <unk>",
        "\uff1cpad\uff1e fullwidth brackets",
        "\uff1c/s\uff1e",
        "\uff1cextra_id_0\uff1e",
        "  <extra_id_1>  spaced  ",
        "numbers 1234567890 and 3.14159",
        "punctuation!?.,;:'\"()[]{}<>@#$%^&*-_=+/\\|`~",
        "\u201cquotes\u201d \u2018single\u2019 \u2014 dash \u2026",
        "URL https://example.com/path?q=1&r=2",
        "ALL CAPS SENTENCE",
        "\u212b angstrom sign",
        "\u2126 ohm",
        "\u3000ideographic\u3000space",
        "\u2028line sep\u2029para sep",
        "\u0085next line",
        "\u200d\u200c joiners",
        "\ufeffbom",
        "e\u0301\u0301\u0301\u0301\u0301 stacked",
        "\u0915\u094d\u0937 conjunct",
        "\U0001d400 math bold",
        "\u00a0",
        "\u3000",
        "a" * 300,
        " ".join(["word"] * 200),
        "The quick brown fox jumps over the lazy dog. " * 12,
    ]
    pool = (
        list("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789.,!?'-")
        + [" ", " ", " ", "  ", "\t", "\n", "\r", "\r\n", "\u00a0", "\u3000", "\u200b", "\u00ad"]
        + ["\u0301", "\u0302", "\u0308", "\u0327", "\u200d", "\ufe0f", "\ufe0e", "\u20e3"]
        + ["\u00e9", "\u00c5", "\ufb01", "\u2460", "\uff21", "\uff41", "\uff10", "\u00bd", "\u2126"]
        + ["\u65e5", "\u672c", "\u3042", "\u30ab", "\uff76", "\uff9e", "\ud55c", "\u1100", "\u1161"]
        + ["\U0001f600", "\U0001f468", "\U0001f3fd", "\U0001f1ef", "\U0001f1f5", "\u2764", "\u2603"]
        + ["<extra_id_0>", "<extra_id_42>", "</s>", "<pad>", "<unk>", "\uff1c", "\uff1e", "\u2581"]
        + ["\u0928", "\u094d", "\u0924", "\u0645", "\u0430", "\u03b1", "\u0130", "\u00df"]
    )
    for _ in range(260):
        n = rng.randint(1, 40)
        s.append("".join(rng.choice(pool) for _ in range(n)))
    return s


def main():
    rng = random.Random(20261202)
    model_path = os.path.join(OUT, "spiece.model.tmp")
    m = t5_spm_model(model_path)
    tok = tokenizer_2024(m)
    tok.save(os.path.join(OUT, "tokenizer.json"))
    tok = Tokenizer.from_file(os.path.join(OUT, "tokenizer.json"))  # as a reader sees it
    sp = spm.SentencePieceProcessor(model_file=model_path)

    # transformers 5's own build of the same spiece.model (T5Tokenizer.__init__)
    import tempfile

    from transformers import T5Tokenizer

    with tempfile.TemporaryDirectory() as d:
        os.replace(model_path, os.path.join(d, "spiece.model"))
        t5 = T5Tokenizer.from_pretrained(d)
    t5.backend_tokenizer.save(os.path.join(OUT, "tokenizer_tf5.json"))
    tok5 = Tokenizer.from_file(os.path.join(OUT, "tokenizer_tf5.json"))

    strings = hard_strings(rng)
    cases, agree, differ = [], 0, []
    for s in strings:
        raw = tok.encode(s, add_special_tokens=False).ids
        tok.enable_truncation(MAXLEN)
        tok.enable_padding(length=MAXLEN, pad_id=0, pad_token="<pad>")
        e = tok.encode(s)
        tok.no_truncation()
        tok.no_padding()
        raw5 = tok5.encode(s, add_special_tokens=False).ids
        # transformers' call, as diffusers makes it
        ids5 = t5(s, padding="max_length", max_length=MAXLEN, truncation=True).input_ids
        cases.append({"text": s, "norm": tok.normalizer.normalize_str(s), "ids": e.ids, "mask": e.attention_mask, "raw_ids": raw,
                      "raw_ids_tf5": raw5, "ids_tf5": ids5})
        if any(x in s for x in ("<extra_id_", "</s>", "<pad>", "<unk>")):
            continue  # sentencepiece has no added tokens: it spells these out
        if sp.encode(s) == raw:
            agree += 1
        else:
            differ.append(s)
    json.dump({"max_length": MAXLEN, "cases": cases}, open(os.path.join(OUT, "tokenizer_cases.json"), "w"),
              ensure_ascii=True, indent=0)
    same5 = sum(c["raw_ids"] == c["raw_ids_tf5"] for c in cases)
    print(f"{len(cases)} strings; sentencepiece agrees on {agree} of {agree + len(differ)} without specials; transformers-5 layout agrees on {same5}")
    for s in differ[:40]:
        print("  spm differs:", repr(s)[:80], sp.encode(s)[:12], tok.encode(s, add_special_tokens=False).ids[:12])


def model_fixtures():
    import copy
    import shutil

    import torch
    from safetensors.torch import save_file
    from transformers import T5Config, T5EncoderModel
    from transformers.models.t5.modeling_t5 import T5Attention

    torch.manual_seed(0)
    specs = [
        # name, config, T, save variants
        ("model_gg", dict(vocab_size=100, d_model=32, d_kv=8, d_ff=40, num_layers=2, num_heads=4,
                          feed_forward_proj="gated-gelu", relative_attention_num_buckets=32,
                          relative_attention_max_distance=128), 140, ("f32_sharded", "bf16", "f16")),
        ("model_relu", dict(vocab_size=77, d_model=36, d_kv=7, d_ff=50, num_layers=3, num_heads=3,
                            feed_forward_proj="relu", relative_attention_num_buckets=10,
                            relative_attention_max_distance=12, layer_norm_epsilon=1e-5), 30, ("f32",)),
    ]
    for name, cfg, T, variants in specs:
        config = T5Config(is_encoder_decoder=False, use_cache=False, dropout_rate=0.0, **cfg)
        model = T5EncoderModel(config).eval()
        with torch.no_grad():  # init is small; make activations lively, norms non-trivial
            for n, p in model.named_parameters():
                if "layer_norm" in n:
                    p.copy_(1 + 0.2 * torch.randn_like(p))
                elif "relative_attention_bias" in n:
                    p.copy_(torch.randn_like(p))
                else:
                    p.copy_(torch.randn_like(p) * (0.5 if "shared" in n else p.shape[-1] ** -0.5))
        ids = torch.randint(0, cfg["vocab_size"], (2, T), generator=torch.Generator().manual_seed(1))
        mask = torch.ones(2, T, dtype=torch.long)
        mask[1, T - T // 3:] = 0
        out = {"input_ids": ids.to(torch.int32).contiguous(), "attention_mask": mask.to(torch.int32)}
        R = 3 * cfg["relative_attention_max_distance"]
        rel = torch.arange(-R, R + 1)
        out["buckets"] = T5Attention._relative_position_bucket(
            rel, True, cfg["relative_attention_num_buckets"], cfg["relative_attention_max_distance"]
        ).to(torch.int32)
        for v in variants:
            dt = {"bf16": torch.bfloat16, "f16": torch.float16}.get(v, torch.float32)
            d = os.path.join(OUT, f"{name}_{v}")
            shutil.rmtree(d, ignore_errors=True)
            m = copy.deepcopy(model).to(dt)
            if v == "f32_sharded":
                m.save_pretrained(d, max_shard_size="30KB")
            else:
                m.save_pretrained(d)
            ref = m.to(torch.float32)  # what is stored, computed in F32
            caught = {}
            hooks = [b.register_forward_hook(lambda mod, i, o, k=k: caught.__setitem__(k, o[0] if isinstance(o, tuple) else o))
                     for k, b in enumerate(ref.encoder.block)]
            with torch.no_grad():
                res = ref(input_ids=ids, output_hidden_states=True)
                emb = ref.shared(ids)
            for h in hooks:
                h.remove()
            with torch.no_grad():
                masked = ref(input_ids=ids, attention_mask=mask).last_hidden_state
            tag = v.split("_")[0]
            out[f"{tag}.hidden.0"] = emb.contiguous()
            for k in range(config.num_layers):
                out[f"{tag}.hidden.{k + 1}"] = caught[k].contiguous()
            out[f"{tag}.last"] = res.last_hidden_state.contiguous()
            out[f"{tag}.masked_last"] = masked.contiguous()
            hs = res.hidden_states
            print(f"{name}/{v}: transformers hidden_states has {len(hs)} entries; [-1] == last_hidden_state: "
                  f"{torch.equal(hs[-1], res.last_hidden_state)}; [-1] == block {config.num_layers - 1} output: "
                  f"{torch.equal(hs[-1], caught[config.num_layers - 1])}; files {sorted(os.listdir(d))}")
        save_file(out, os.path.join(OUT, f"{name}.expected.safetensors"))


def flux_text_fixtures():
    """FLUX prompt encoding: diffusers' FluxPipeline.encode_prompt with a tiny
    CLIP text tower (fixtures/clip/e2e: tokenizer.json + CLIPModel weights)
    and a tiny T5 (vocab 1100, BF16 weights) with fixtures/t5/tokenizer.json
    used as-is (the 2024 layout; transformers 5's T5Tokenizer would rebuild it)."""
    import shutil

    import torch
    from diffusers import FluxPipeline
    from safetensors.torch import save_file
    from transformers import CLIPTextModel, CLIPTokenizer, PreTrainedTokenizerFast, T5Config, T5EncoderModel

    torch.manual_seed(3)
    clip_dir = os.path.join(os.path.dirname(OUT), "clip", "e2e")
    tok1 = CLIPTokenizer.from_pretrained(clip_dir)
    tok1.model_max_length = 77  # FLUX's tokenizer/ says 77
    te1 = CLIPTextModel.from_pretrained(clip_dir).eval()
    tok2 = PreTrainedTokenizerFast(tokenizer_object=Tokenizer.from_file(os.path.join(OUT, "tokenizer.json")),
                                   pad_token="<pad>", eos_token="</s>", unk_token="<unk>")
    config = T5Config(vocab_size=1100, d_model=32, d_kv=8, d_ff=40, num_layers=2, num_heads=4,
                      feed_forward_proj="gated-gelu", is_encoder_decoder=False, use_cache=False, dropout_rate=0.0)
    te2 = T5EncoderModel(config).eval()
    with torch.no_grad():
        for n, p in te2.named_parameters():
            if "layer_norm" in n:
                p.copy_(1 + 0.2 * torch.randn_like(p))
            elif "relative_attention_bias" in n:
                p.copy_(torch.randn_like(p))
            else:
                p.copy_(torch.randn_like(p) * (0.5 if "shared" in n else p.shape[-1] ** -0.5))
    d = os.path.join(OUT, "flux_text_encoder_2")
    shutil.rmtree(d, ignore_errors=True)
    te2 = te2.to(torch.bfloat16)
    te2.save_pretrained(d)  # what FLUX ships: BF16
    te2 = te2.to(torch.float32)  # the stored weights, computed in F32
    pipe = FluxPipeline(scheduler=None, vae=None, text_encoder=te1, tokenizer=tok1, text_encoder_2=te2,
                        tokenizer_2=tok2, transformer=None)
    prompts = [
        "a photo of a cat",
        "A DOG running on the beach!",
        "",
        "   lots   of\twhitespace   \r\n",
        "caf\u00e9 cr\u00e8me br\u00fbl\u00e9e <extra_id_0> \u6771\u4eac",
        "a very long caption " + "that goes on and on " * 20,
    ]
    L = 40
    with torch.no_grad():
        pe, pooled, text_ids = pipe.encode_prompt(prompt=prompts, prompt_2=None, max_sequence_length=L)
    print("encode_prompt:", tuple(pe.shape), tuple(pooled.shape), tuple(text_ids.shape), pe.dtype)
    save_file({"prompt_embeds": pe.contiguous(), "pooled_prompt_embeds": pooled.contiguous()},
              os.path.join(OUT, "flux_text.expected.safetensors"),
              metadata={"prompts": json.dumps(prompts), "max_sequence_length": str(L)})


if os.environ.get("T5_FIX_PART", "all") in ("all", "tokenizer"):
    main()
if os.environ.get("T5_FIX_PART", "all") in ("all", "model"):
    model_fixtures()
if os.environ.get("T5_FIX_PART", "all") in ("all", "flux"):
    flux_text_fixtures()
