"""`rlscale export-hf`: write a lab checkpoint as a standard Hugging Face LlamaForCausalLM directory."""

from __future__ import annotations

HELP = "export a lab checkpoint as a Hugging Face transformers model (Llama config + fast tokenizer)"


def add_arguments(parser) -> None:
    parser.add_argument("--model", required=True, help="lab checkpoint directory (written by `rlscale pretrain`)")
    parser.add_argument("--out", required=True, help="output directory for the Hugging Face checkpoint")


def run(args) -> int:
    from rlscale.models.export import export_hf
    from rlscale.models.tiny import TinyPolicy

    policy = TinyPolicy.load(args.model)
    out = export_hf(policy, args.out)
    print(f"wrote {out} (LlamaForCausalLM, {policy.num_params():,} params); "
          f"load with AutoModelForCausalLM.from_pretrained('{out}')")
    return 0
