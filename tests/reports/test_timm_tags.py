"""The ImageNet-1k-only rule on real timm model names (from timm's results/results-imagenet.csv)."""

import pytest

from reports.timm_tags import timm_tags

CASES = {
    # ImageNet-1k only: recipes, self-supervised on in1k, distilled from in1k teachers
    "resnet50.a1_in1k": ("standard",),
    "resnet50.tv_in1k": ("standard",),
    "vit_base_patch16_224.augreg_in1k": ("standard",),
    "deit_base_distilled_patch16_224.fb_in1k": ("standard",),
    "convnextv2_base.fcmae_ft_in1k": ("standard",),
    "hiera_base_224.mae_in1k_ft_in1k": ("standard",),
    "cait_m36_384.fb_dist_in1k": ("standard",),
    "resnetrs420.tf_in1k": ("standard",),
    # more data
    "vit_base_patch16_224.augreg_in21k_ft_in1k": ("more-data",),
    "convnext_xlarge.fb_in22k_ft_in1k": ("more-data",),
    "eva02_large_patch14_448.mim_m38m_ft_in22k_in1k": ("more-data",),
    "tf_efficientnet_l2.ns_jft_in1k": ("more-data",),
    "resnext101_32x16d.fb_swsl_ig1b_ft_in1k": ("more-data",),
    "resnet50.fb_ssl_yfcc100m_ft_in1k": ("more-data",),
    "nextvit_base.bd_ssld_6m_in1k": ("more-data",),
    "resnetv2_50x1_bit.goog_distilled_in1k": ("more-data",),
    "vit_so400m_patch14_siglip_378.webli_ft_in1k": ("more-data",),
    "convnext_xxlarge.clip_laion2b_soup_ft_in1k": ("clip", "more-data"),
    "vit_base_patch16_clip_224.openai_ft_in1k": ("clip", "more-data"),
    # robustness interventions
    "inception_v3.tf_adv_in1k": ("robustness-intervention",),
    "inception_resnet_v2.tf_ens_adv_in1k": ("robustness-intervention",),
    "tf_efficientnet_b8.ap_in1k": ("robustness-intervention",),
    "resnet50.am_in1k": ("robustness-intervention",),
    "resnet50.ram_in1k": ("robustness-intervention",),
    # not an ImageNet-1k classifier tag
    "resmlp_24_224.fb_dino": ("unknown-pretraining",),
}


@pytest.mark.parametrize("name,expected", sorted(CASES.items()))
def test_tag_rule_on_real_names(name, expected):
    assert timm_tags(name) == expected


def test_every_case_is_a_real_timm_name():
    from pathlib import Path

    folder = Path(__file__).resolve().parents[2] / "data/published/timm"
    # resmlp_24_224.fb_dino appears only in timm's ImageNet-A results
    real = {line.split(",", 1)[0] for f in ("results-imagenet.csv", "results-imagenet-a.csv")
            for line in (folder / f).read_text().splitlines()[1:]}
    assert set(CASES) - real == set()
