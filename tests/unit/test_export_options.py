"""Every option of every export format is checked for type and range before anything is computed or written."""

from __future__ import annotations

import inspect

import pytest
from export_scenes import synthetic_prediction

from da3core.errors import UserError, is_user_error
from da3core.export import FORMATS, check_formats, export
from da3core.export.options import RULES, ExportOptionError
from da3core.export.registry import SHARED_DEFAULTS, _function, check_option_ranges


@pytest.fixture(scope="module")
def prediction():
    return synthetic_prediction(n_views=2, width=70, height=56)[0]


@pytest.mark.parametrize("name", sorted(FORMATS))
def test_every_accepted_option_has_a_rule_or_a_checker(name):
    fmt = FORMATS[name]
    unchecked = fmt.accepted - set(RULES) - fmt.checked_by_checker
    assert not unchecked, f"{name} accepts {sorted(unchecked)} without checking their values"


@pytest.mark.parametrize(
    ("name", "options", "message"),
    [
        ("glb", {"camera_size": "abc"}, "camera_size='abc' is not a number; use a positive number"),
        ("glb", {"camera_size": 0}, "camera_size=0 is out of range; use a positive number"),
        ("glb", {"camera_size": float("inf")}, "camera_size=inf is out of range"),
        ("glb", {"ensure_thresh_percentile": 150}, "ensure_thresh_percentile=150 is out of range; use a percentile"),
        ("glb", {"conf_thresh": "abc"}, "conf_thresh='abc' is not a number; use a finite confidence floor"),
        ("glb", {"conf_thresh": float("nan")}, "conf_thresh=nan is out of range"),
        ("glb", {"show_cameras": "maybe"}, "show_cameras='maybe' is not a boolean; use true or false"),
        ("glb", {"show_cameras": 1}, "show_cameras=1 is not a boolean"),
        ("glb", {"export_depth_vis": "no"}, "export_depth_vis='no' is not a boolean"),
        ("glb", {"seed": -1}, "seed=-1 is out of range; use a whole number, 0 or more"),
        ("glb", {"seed": 1.5}, "seed=1.5 is not a whole number"),
        ("glb", {"num_max_points": True}, "num_max_points=True is not a whole number"),
        ("glb", {"num_max_points": 1e20}, "num_max_points=1e\\+20 is not a whole number"),
        ("glb", {"conf_thresh_percentile": "abc"}, "conf_thresh_percentile='abc' is not a number"),
        ("glb", {"conf_thresh_percentile": None}, "conf_thresh_percentile=None is null; use a percentile"),
        ("colmap", {"seed": "abc"}, "seed='abc' is not a whole number"),
        ("colmap", {"process_res_method": 3}, "resize preprocessing"),
        ("ply", {"filter_white_bg": "yes"}, "filter_white_bg='yes' is not a boolean"),
        ("nerfstudio", {"filter_black_bg": "abc"}, "filter_black_bg='abc' is not a boolean"),
        ("nerfstudio", {"num_points": 0}, "num_points=0 is out of range; use a whole number of points"),
        ("feat_vis", {"fps": 0}, "fps=0 is not a positive number"),
        ("feat_vis", {"clip_percent": 60}, "clip_percent=60 is out of range"),
        ("feat_vis", {"video_quality": "best"}, "video_quality='best' is unknown; use one of low, medium, high"),
        ("gs_ply", {"prune_border": "yes"}, "prune_border='yes' is not a boolean"),
        ("gs_ply", {"gs_views_interval": True}, "gs_views_interval must be a positive integer"),
        ("gs_video", {"chunk_size": True}, "chunk_size must be a positive integer"),
        ("gs_video", {"device": 3}, "device must be a device name"),
        ("gs_video", {"fps": float("inf")}, "fps must be a positive number"),
    ],
)
def test_a_bad_value_is_one_line_naming_the_option_and_what_is_allowed(name, options, message):
    with pytest.raises(ValueError, match=message) as info:
        FORMATS[name].check_options(options)
    assert "\n" not in str(info.value)


def test_value_errors_of_the_rules_are_user_errors_carrying_the_key():
    with pytest.raises(ExportOptionError) as info:
        FORMATS["glb"].check_options({"camera_size": "abc"})
    assert isinstance(info.value, UserError) and is_user_error(info.value)
    assert (info.value.key, info.value.value) == ("camera_size", "abc")


@pytest.mark.parametrize(("name", "key"), [("glb", "frame"), ("ply", "frame"), ("nerfstudio", "frame")])
def test_internal_writer_keywords_are_not_options(name, key):
    assert key not in FORMATS[name].accepted
    with pytest.raises(TypeError, match=rf"'{name}' has no option\(s\) \['{key}'\]"):
        FORMATS[name].check_options({key: 3})


def test_nerfstudio_point_budget_is_num_points_and_takes_the_shared_num_max_points(prediction, tmp_path):
    with pytest.raises(TypeError, match=r"'nerfstudio' has no option\(s\) \['num_max_points'\]; valid: .*'num_points'"):
        FORMATS["nerfstudio"].check_options({"num_max_points": 1})
    assert FORMATS["nerfstudio"].shared["num_max_points"] == "num_points"  # what the da3 CLI's flag sets
    export(prediction, "nerfstudio", tmp_path, num_max_points=7)
    header = (tmp_path / "nerfstudio" / "points3D.ply").read_bytes().split(b"end_header")[0]
    assert b"element vertex 7\n" in header


def test_nerfstudio_keeps_its_own_budget_when_none_is_given(prediction, tmp_path):
    export(prediction, "nerfstudio", tmp_path)  # 200_000 > the 2 x 70 x 56 pixels: every confident point
    header = (tmp_path / "nerfstudio" / "points3D.ply").read_bytes().split(b"end_header")[0]
    count = int(header.split(b"element vertex ")[1].split(b"\n")[0])
    assert 70 * 56 < count < 2 * 70 * 56


def test_shared_options_are_checked_under_their_own_name(prediction, tmp_path):
    with pytest.raises(ValueError, match="num_max_points=0 is out of range"):
        export(prediction, "nerfstudio", tmp_path, num_max_points=0)
    with pytest.raises(ValueError, match="show_cameras='no' is not a boolean"):
        check_formats("glb", has_conf=True, has_gaussians=False, has_features=False, options={"show_cameras": "no"})
    assert not any(tmp_path.iterdir())


def test_bad_values_fail_before_anything_is_written(prediction, tmp_path):
    for options in ({"glb": {"camera_size": "abc"}}, {"glb": {"ensure_thresh_percentile": 150}}):
        with pytest.raises(ValueError):
            export(prediction, "npz+glb", tmp_path, **options)
    assert not any(tmp_path.iterdir())


def test_the_cli_range_check_keeps_its_interface():
    check_option_ranges({"conf_thresh_percentile": 40.0, "num_max_points": 10, "show_cameras": False})
    check_option_ranges({"feat_vis_fps": 15, "render_hw": None, "not_a_rule": object()})
    with pytest.raises(ValueError, match="conf_thresh_percentile=150.0 is out of range; use a percentile from 0"):
        check_option_ranges({"conf_thresh_percentile": 150.0})
    with pytest.raises(ValueError, match="num_max_points=-5 is out of range"):
        check_option_ranges({"num_max_points": -5})


def test_good_values_pass(prediction, tmp_path):
    FORMATS["glb"].check_options(
        {
            "camera_size": 0.1,
            "ensure_thresh_percentile": None,
            "conf_thresh": None,
            "show_cameras": False,
            "seed": 3,
            "num_max_points": None,
            "conf_thresh_percentile": 0,
            "filter_black_bg": True,
        }
    )
    FORMATS["feat_vis"].check_options({"fps": 12.5, "clip_percent": 0, "video_quality": "low"})
    paths = export(prediction, "glb", tmp_path, glb={"camera_size": 0.1, "seed": 2, "export_depth_vis": False})
    assert [p.rsplit("/", 1)[-1] for p in paths["glb"]] == ["scene.glb"]


def test_shared_defaults_are_the_writers_own_defaults():
    """plan_options passes only the shared options a caller gives, so the writers' defaults must be these."""
    for fmt in FORMATS.values():
        writers = [fmt.write, *map(_function, fmt.forwards)]
        if fmt.frame_writer:
            writers.append(_function(fmt.frame_writer))
        for shared, keyword in fmt.shared.items():
            defaults = {
                fn.__name__: inspect.signature(fn).parameters[keyword].default
                for fn in writers
                if keyword in inspect.signature(fn).parameters
            }
            assert defaults, (fmt.name, keyword)
            wanted = 200_000 if (fmt.name, keyword) == ("nerfstudio", "num_points") else SHARED_DEFAULTS[shared]
            assert set(defaults.values()) == {wanted}, (fmt.name, keyword, defaults)
