"""nodeapi.validation: pure rules shared by the apiserver and nodectl."""

from __future__ import annotations

import pytest

from nodeapi import validation as v


@pytest.mark.parametrize(
    "key", ["os", "a", "A-b_c.d", "example.com/gpu", "k8s.io/arch", "x" * 63, ("a" * 63 + ".") * 3 + "b/n"]
)
def test_valid_label_keys(key: str) -> None:
    assert v.validate_label_key(key) == key


@pytest.mark.parametrize(
    ("key", "hint"),
    [
        ("", "name"),
        ("-a", "name"),
        ("a-", "name"),
        ("a b", "name"),
        ("x" * 64, "name"),
        ("/name", "prefix"),
        ("Example.com/gpu", "prefix"),
        ("ex_ample.com/gpu", "prefix"),
        ("a" * 254 + "/n", "prefix"),
        ("example.com/", "name"),
        ("é", "name"),
    ],
)
def test_invalid_label_keys_name_the_field_and_rule(key: str, hint: str) -> None:
    with pytest.raises(ValueError, match=rf"^labels: key .* {hint}"):
        v.validate_label_key(key)


def test_label_values() -> None:
    assert v.validate_label_value("k", "") == ""
    assert v.validate_label_value("k", "v1.2_3-x") == "v1.2_3-x"
    for bad in ("-v", "v-", "a b", "x" * 64, "v\x00", "ü"):
        with pytest.raises(ValueError, match=r"value .* of 'k' is invalid"):
            v.validate_label_value("k", bad)


def test_validate_labels_allows_removal_and_caps_count() -> None:
    v.validate_labels({"a": "1", "gone": None})
    with pytest.raises(ValueError, match="at most 64 labels"):
        v.validate_labels({f"k{i}": "v" for i in range(65)})


def test_parse_selector() -> None:
    assert v.parse_selector("a=1, b==two ,c=") == {"a": "1", "b": "two", "c": ""}
    assert v.parse_selector("") == {}
    with pytest.raises(ValueError, match="selector: term 'gpu' must look like key=value"):
        v.parse_selector("gpu")
    with pytest.raises(ValueError, match="selector: key"):
        v.parse_selector("bad key=x")


@pytest.mark.parametrize("name", ["A", "_", "HTTP_PROXY", "a1_b2"])
def test_valid_env_names(name: str) -> None:
    assert v.validate_env_name(name) == name


@pytest.mark.parametrize("name", ["", "1A", "A-B", "A B", "Ä", "A=B", "x" * 257])
def test_invalid_env_names(name: str) -> None:
    with pytest.raises(ValueError, match=r"env: variable name .* \[A-Za-z_\]"):
        v.validate_env_name(name)


def test_env_values() -> None:
    v.validate_env({"A": "", "B": "x" * 1000})
    with pytest.raises(ValueError, match="value of A contains a NUL"):
        v.validate_env({"A": "a\x00b"})
    with pytest.raises(ValueError, match="longer than"):
        v.validate_env({"A": "x" * (v.MAX_ENV_VALUE_LENGTH + 1)})


@pytest.mark.parametrize(
    "url",
    [
        "http://proxy:3128",
        "https://proxy.example.com",
        "socks5://10.0.0.1:1080",
        "socks5h://user:p%40ss@proxy:1080",
        "http://[::1]:8080/",
        "HTTP://Proxy.Local:80",
    ],
)
def test_valid_proxy_urls(url: str) -> None:
    assert v.validate_proxy_url(url) == url


@pytest.mark.parametrize(
    ("url", "rule"),
    [
        ("ftp://proxy:21", "schemes"),
        ("proxy:3128", "schemes"),
        ("http://", "host"),
        ("http://:3128", "host"),
        ("http://user:pw@:3128", "host"),
        ("http://proxy:0", "port"),
        ("http://proxy:65536", "port"),
        ("http://proxy:abc", "port"),
        ("http://proxy:3128/path", "path"),
        ("http://proxy:3128?q=1", "path"),
        ("http://pro xy:3128", "whitespace"),
        ("http://bad_host!:3128", "host"),
        ("http://[::1:3128", "not a valid URL"),
    ],
)
def test_invalid_proxy_urls(url: str, rule: str) -> None:
    with pytest.raises(ValueError, match=rf"^proxy(\.http_proxy)?: .*{rule}") as info:
        v.validate_proxy_url(url, "proxy.http_proxy" if "user" in url else "proxy")
    assert "pw" not in str(info.value)


def test_no_proxy() -> None:
    assert v.validate_no_proxy("localhost,.internal,10.0.0.0/8") == "localhost,.internal,10.0.0.0/8"
    with pytest.raises(ValueError, match="no_proxy: must be"):
        v.validate_no_proxy("a\nb")


@pytest.mark.parametrize("node_id", ["n", "node-01", "Host.example.com", "a_b", "9" * 253])
def test_valid_node_ids(node_id: str) -> None:
    assert v.validate_node_id(node_id) == node_id


@pytest.mark.parametrize("node_id", ["", "-a", ".a", "a b", "a/b", "é", "x" * 254, "a\x00"])
def test_invalid_node_ids(node_id: str) -> None:
    with pytest.raises(ValueError, match=r"node_id .* is invalid: use 1-253 characters"):
        v.validate_node_id(node_id)


def test_capacity() -> None:
    assert v.validate_capacity(1) == 1
    assert v.validate_capacity(v.MAX_CAPACITY) == v.MAX_CAPACITY
    for bad in (0, -1, v.MAX_CAPACITY + 1, True):
        with pytest.raises(ValueError, match=r"capacity.max_concurrent must be an integer between 1 and"):
            v.validate_capacity(bad)


@pytest.mark.parametrize(
    ("url", "masked"),
    [
        ("http://bob:secret@proxy:3128", "http://bob:***@proxy:3128"),
        ("socks5h://u:p%40ss@[::1]:1080", "socks5h://u:***@[::1]:1080"),
        ("http://bob@proxy:3128", "http://bob@proxy:3128"),
        ("http://proxy:3128", "http://proxy:3128"),
        ("not a url", "not a url"),
        ("http://a:b@[::1", "<unparsable URL>"),
    ],
)
def test_mask_url_password(url: str, masked: str) -> None:
    assert v.mask_url_password(url) == masked
