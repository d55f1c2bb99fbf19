"""Image references normalise as `docker pull` does (vectors from github.com/distribution/reference)."""

from __future__ import annotations

import pytest

from distill.reference import ImageReference, ReferenceError, parse_reference

HUB = "docker.io"
HUB_API = "registry-1.docker.io"
HEX = "e6693c20186f837fc393390135d8a598a96a833917917789d63766cab6c59582"
SHA256 = f"sha256:{HEX}"
SHA512 = "sha512:" + "f" * 128
IMAGE_ID = "1a3f5e7d9c1b3a5f7e9d1c3b5a7f9e1d3c5b7a9f1e3d5d7c9b1a3f5e7d9c1b3a"


def valid(
    text: str, registry: str, repository: str, tag: str | None, digest: str | None, full: str, familiar: str, api_host: str, id: str
) -> object:
    return pytest.param(text, registry, repository, tag, digest, full, familiar, api_host, id=id)


VALID = [
    # Docker Hub: the default registry, "library/" for one-part names, index.docker.io as a legacy alias
    valid("nginx", HUB, "library/nginx", "latest", None, "docker.io/library/nginx:latest", "nginx:latest", HUB_API, id="bare-name"),
    valid("nginx:1.25", HUB, "library/nginx", "1.25", None, "docker.io/library/nginx:1.25", "nginx:1.25", HUB_API, id="name-tag"),
    valid(
        "library/nginx",
        HUB,
        "library/nginx",
        "latest",
        None,
        "docker.io/library/nginx:latest",
        "nginx:latest",
        HUB_API,
        id="library-prefix",
    ),
    valid(
        "docker.io/nginx",
        HUB,
        "library/nginx",
        "latest",
        None,
        "docker.io/library/nginx:latest",
        "nginx:latest",
        HUB_API,
        id="hub-domain-one-part",
    ),
    valid(
        "docker.io/library/nginx:latest",
        HUB,
        "library/nginx",
        "latest",
        None,
        "docker.io/library/nginx:latest",
        "nginx:latest",
        HUB_API,
        id="fully-qualified",
    ),
    valid(
        "index.docker.io/nginx",
        HUB,
        "library/nginx",
        "latest",
        None,
        "docker.io/library/nginx:latest",
        "nginx:latest",
        HUB_API,
        id="legacy-index-one-part",
    ),
    valid(
        "index.docker.io/docker/docker",
        HUB,
        "docker/docker",
        "latest",
        None,
        "docker.io/docker/docker:latest",
        "docker/docker:latest",
        HUB_API,
        id="legacy-index-user-repo",
    ),
    valid("user/repo", HUB, "user/repo", "latest", None, "docker.io/user/repo:latest", "user/repo:latest", HUB_API, id="user-repo"),
    valid("user/app:1", HUB, "user/app", "1", None, "docker.io/user/app:1", "user/app:1", HUB_API, id="user-repo-tag"),
    valid(
        "other/library",
        HUB,
        "other/library",
        "latest",
        None,
        "docker.io/other/library:latest",
        "other/library:latest",
        HUB_API,
        id="library-as-last-component",
    ),
    valid("a/b/c/d", HUB, "a/b/c/d", "latest", None, "docker.io/a/b/c/d:latest", "a/b/c/d:latest", HUB_API, id="deep-path"),
    valid(
        "docker.io/library/foo/bar",
        HUB,
        "library/foo/bar",
        "latest",
        None,
        "docker.io/library/foo/bar:latest",
        "library/foo/bar:latest",
        HUB_API,
        id="library-nested-keeps-prefix",
    ),
    valid(
        "test_com/foo",
        HUB,
        "test_com/foo",
        "latest",
        None,
        "docker.io/test_com/foo:latest",
        "test_com/foo:latest",
        HUB_API,
        id="underscore-first-component-is-a-path",
    ),
    valid(
        "ubuntu-12.04-base",
        HUB,
        "library/ubuntu-12.04-base",
        "latest",
        None,
        "docker.io/library/ubuntu-12.04-base:latest",
        "ubuntu-12.04-base:latest",
        HUB_API,
        id="dots-and-dashes",
    ),
    valid(
        "docker.io/" + IMAGE_ID,
        HUB,
        "library/" + IMAGE_ID,
        "latest",
        None,
        f"docker.io/library/{IMAGE_ID}:latest",
        f"{IMAGE_ID}:latest",
        HUB_API,
        id="hex-name-with-domain",
    ),
    # separators inside a path component
    valid(
        "foo__bar",
        HUB,
        "library/foo__bar",
        "latest",
        None,
        "docker.io/library/foo__bar:latest",
        "foo__bar:latest",
        HUB_API,
        id="sep-double-underscore",
    ),
    valid(
        "foo_bar",
        HUB,
        "library/foo_bar",
        "latest",
        None,
        "docker.io/library/foo_bar:latest",
        "foo_bar:latest",
        HUB_API,
        id="sep-underscore",
    ),
    valid(
        "foo.bar",
        HUB,
        "library/foo.bar",
        "latest",
        None,
        "docker.io/library/foo.bar:latest",
        "foo.bar:latest",
        HUB_API,
        id="sep-dot-one-part-is-a-name",
    ),
    valid("foo-bar", HUB, "library/foo-bar", "latest", None, "docker.io/library/foo-bar:latest", "foo-bar:latest", HUB_API, id="sep-dash"),
    valid(
        "foo--bar",
        HUB,
        "library/foo--bar",
        "latest",
        None,
        "docker.io/library/foo--bar:latest",
        "foo--bar:latest",
        HUB_API,
        id="sep-dashes",
    ),
    valid(
        "docker---rules/docker",
        HUB,
        "docker---rules/docker",
        "latest",
        None,
        "docker.io/docker---rules/docker:latest",
        "docker---rules/docker:latest",
        HUB_API,
        id="sep-many-dashes",
    ),
    valid("d/docker", HUB, "d/docker", "latest", None, "docker.io/d/docker:latest", "d/docker:latest", HUB_API, id="single-char-namespace"),
    # one-part names that look like hosts are still Docker Hub names: the registry needs a "/" after it
    valid(
        "localhost:5000",
        HUB,
        "library/localhost",
        "5000",
        None,
        "docker.io/library/localhost:5000",
        "localhost:5000",
        HUB_API,
        id="host-port-without-slash-is-name-tag",
    ),
    valid(
        "192.168.0.1",
        HUB,
        "library/192.168.0.1",
        "latest",
        None,
        "docker.io/library/192.168.0.1:latest",
        "192.168.0.1:latest",
        HUB_API,
        id="ipv4-without-slash-is-name",
    ),
    # other registries: ".", ":" or "localhost" in the first component, or uppercase in it
    valid(
        "localhost/fooo", "localhost", "fooo", "latest", None, "localhost/fooo:latest", "localhost/fooo:latest", "localhost", id="localhost"
    ),
    valid(
        "localhost:5000/x",
        "localhost:5000",
        "x",
        "latest",
        None,
        "localhost:5000/x:latest",
        "localhost:5000/x:latest",
        "localhost:5000",
        id="localhost-port",
    ),
    valid(
        "127.0.0.1:5000/x/y:1",
        "127.0.0.1:5000",
        "x/y",
        "1",
        None,
        "127.0.0.1:5000/x/y:1",
        "127.0.0.1:5000/x/y:1",
        "127.0.0.1:5000",
        id="ipv4-port",
    ),
    valid(
        "test-com:8080/foo",
        "test-com:8080",
        "foo",
        "latest",
        None,
        "test-com:8080/foo:latest",
        "test-com:8080/foo:latest",
        "test-com:8080",
        id="dashed-host-port",
    ),
    valid(
        "ghcr.io/distilled/nginx:1",
        "ghcr.io",
        "distilled/nginx",
        "1",
        None,
        "ghcr.io/distilled/nginx:1",
        "ghcr.io/distilled/nginx:1",
        "ghcr.io",
        id="ghcr",
    ),
    valid(
        "example.com/privatebase",
        "example.com",
        "privatebase",
        "latest",
        None,
        "example.com/privatebase:latest",
        "example.com/privatebase:latest",
        "example.com",
        id="no-library-prefix-off-hub",
    ),
    valid(
        "b.gcr.io/test.example.com/my-app:test.example.com",
        "b.gcr.io",
        "test.example.com/my-app",
        "test.example.com",
        None,
        "b.gcr.io/test.example.com/my-app:test.example.com",
        "b.gcr.io/test.example.com/my-app:test.example.com",
        "b.gcr.io",
        id="dotted-path-and-tag",
    ),
    valid(
        "xn--n3h.com/myimage:xn--n3h.com",
        "xn--n3h.com",
        "myimage",
        "xn--n3h.com",
        None,
        "xn--n3h.com/myimage:xn--n3h.com",
        "xn--n3h.com/myimage:xn--n3h.com",
        "xn--n3h.com",
        id="punycode-host",
    ),
    valid("[::1]:5000/x", "[::1]:5000", "x", "latest", None, "[::1]:5000/x:latest", "[::1]:5000/x:latest", "[::1]:5000", id="ipv6-port"),
    valid(
        "[2001:db8::1]/repo:tag",
        "[2001:db8::1]",
        "repo",
        "tag",
        None,
        "[2001:db8::1]/repo:tag",
        "[2001:db8::1]/repo:tag",
        "[2001:db8::1]",
        id="ipv6-no-port",
    ),
    valid("Foo/bar", "Foo", "bar", "latest", None, "Foo/bar:latest", "Foo/bar:latest", "Foo", id="uppercase-first-is-host"),
    valid(
        "LOCALDOMAIN/fooo/bar",
        "LOCALDOMAIN",
        "fooo/bar",
        "latest",
        None,
        "LOCALDOMAIN/fooo/bar:latest",
        "LOCALDOMAIN/fooo/bar:latest",
        "LOCALDOMAIN",
        id="uppercase-host-deep",
    ),
    # tags and digests
    valid(
        "lowercase:Uppercase",
        HUB,
        "library/lowercase",
        "Uppercase",
        None,
        "docker.io/library/lowercase:Uppercase",
        "lowercase:Uppercase",
        HUB_API,
        id="uppercase-tag",
    ),
    valid(
        "nginx:_x-1.0",
        HUB,
        "library/nginx",
        "_x-1.0",
        None,
        "docker.io/library/nginx:_x-1.0",
        "nginx:_x-1.0",
        HUB_API,
        id="tag-leading-underscore",
    ),
    valid(
        "nginx:" + "t" * 128,
        HUB,
        "library/nginx",
        "t" * 128,
        None,
        "docker.io/library/nginx:" + "t" * 128,
        "nginx:" + "t" * 128,
        HUB_API,
        id="tag-128-chars",
    ),
    valid(
        f"ubuntu@{SHA256}",
        HUB,
        "library/ubuntu",
        None,
        SHA256,
        f"docker.io/library/ubuntu@{SHA256}",
        f"ubuntu@{SHA256}",
        HUB_API,
        id="digest-only",
    ),
    valid(
        f"busybox:latest@{SHA256}",
        HUB,
        "library/busybox",
        "latest",
        SHA256,
        f"docker.io/library/busybox:latest@{SHA256}",
        f"busybox:latest@{SHA256}",
        HUB_API,
        id="tag-and-digest",
    ),
    valid(
        f"[2001:db8::1]:5000/repo@{SHA256}",
        "[2001:db8::1]:5000",
        "repo",
        None,
        SHA256,
        f"[2001:db8::1]:5000/repo@{SHA256}",
        f"[2001:db8::1]:5000/repo@{SHA256}",
        "[2001:db8::1]:5000",
        id="ipv6-digest",
    ),
    valid(
        f"test:5000/repo:tag@{SHA256}",
        "test:5000",
        "repo",
        "tag",
        SHA256,
        f"test:5000/repo:tag@{SHA256}",
        f"test:5000/repo:tag@{SHA256}",
        "test:5000",
        id="port-tag-digest",
    ),
    valid(
        f"example.com/app@{SHA512}",
        "example.com",
        "app",
        None,
        SHA512,
        f"example.com/app@{SHA512}",
        f"example.com/app@{SHA512}",
        "example.com",
        id="sha512",
    ),
    # the length limit is on the repository path alone (upstream: RepositoryNameTotalLengthMax)
    valid(
        "example.com/" + "a" * 255,
        "example.com",
        "a" * 255,
        "latest",
        None,
        f"example.com/{'a' * 255}:latest",
        f"example.com/{'a' * 255}:latest",
        "example.com",
        id="path-255-chars",
    ),
]

INVALID = [
    pytest.param("", "reference is empty", id="empty"),
    pytest.param("Nginx", "repository name must be lowercase", id="uppercase-name"),
    pytest.param("docker/Docker", "repository name must be lowercase", id="uppercase-second-component"),
    pytest.param("test:5000/Uppercase/lowercase:tag", "repository name must be lowercase", id="uppercase-after-registry"),
    pytest.param(IMAGE_ID, "is an image ID, not a repository name", id="bare-image-id"),
    pytest.param(":justtag", "repository name is missing", id="bare-tag"),
    pytest.param(f"@{SHA256}", "repository name is missing", id="bare-digest"),
    pytest.param("localhost/", "repository name is missing", id="registry-only"),
    pytest.param("/nginx", "empty path component", id="leading-slash"),
    pytest.param("user/nginx/", "empty path component", id="trailing-slash"),
    pytest.param("docker///docker", "empty path component", id="triple-slash"),
    pytest.param("docker.io/docker//docker", "empty path component", id="double-slash"),
    pytest.param("foo_-bar", 'invalid repository path component "foo_-bar"', id="sep-underscore-dash"),
    pytest.param("foo___bar", 'invalid repository path component "foo___bar"', id="sep-triple-underscore"),
    pytest.param("docker/dock..er", 'invalid repository path component "dock..er"', id="sep-double-dot"),
    pytest.param("docker/dock-.er", 'invalid repository path component "dock-.er"', id="sep-dash-dot"),
    pytest.param("-docker", 'invalid repository path component "-docker"', id="leading-dash"),
    pytest.param("docker-/docker", 'invalid repository path component "docker-"', id="trailing-dash"),
    pytest.param("____/____", 'invalid repository path component "____"', id="only-underscores"),
    pytest.param("dock..er/docker", 'invalid registry host "dock..er"', id="dotted-first-component-is-a-host"),
    pytest.param("aa/asdf$$^/aa", 'invalid repository path component "asdf$$^"', id="punctuation"),
    pytest.param("nginx latest", 'invalid repository path component "nginx latest"', id="space"),
    pytest.param("[2001:db8::1]:5000", 'invalid repository path component "[2001"', id="ipv6-without-path"),
    pytest.param("https://github.com/docker/docker", 'invalid registry host "https:"', id="url"),
    pytest.param("-docker.io/docker/docker", 'invalid registry host "-docker.io"', id="host-leading-dash"),
    pytest.param("fc00::1:5000/debian", 'invalid registry host "fc00::1:5000"', id="ipv6-without-brackets"),
    pytest.param("[fe80::1%eth0]:5000/repo", 'invalid registry host "[fe80::1%eth0]:5000"', id="ipv6-zone"),
    pytest.param("foo_bar.com/x", 'invalid registry host "foo_bar.com"', id="host-underscore"),
    pytest.param("example.com/" + "a" * 256, "repository name is longer than 255 characters", id="path-256-chars"),
    pytest.param("a" * 250, "repository name is longer than 255 characters", id="library-prefix-counts"),
    pytest.param("nginx:", 'invalid tag ""', id="empty-tag"),
    pytest.param("nginx:-x", 'invalid tag "-x"', id="tag-leading-dash"),
    pytest.param("nginx:.x", 'invalid tag ".x"', id="tag-leading-dot"),
    pytest.param("nginx:a:b", 'invalid tag "a:b"', id="tag-with-colon"),
    pytest.param("nginx:t\u00e9", 'invalid tag "t\u00e9"', id="tag-non-ascii"),
    pytest.param("nginx:" + "t" * 129, "tag is longer than 128 characters", id="tag-129-chars"),
    pytest.param("repo@sha256:" + "f" * 34, "a sha256 digest must be 64 lowercase hex digits", id="digest-short"),
    pytest.param("repo@sha256:" + HEX.upper(), "a sha256 digest must be 64 lowercase hex digits", id="digest-uppercase-hex"),
    pytest.param("repo@sha512:" + HEX, "a sha512 digest must be 128 lowercase hex digits", id="sha512-short"),
    pytest.param(f"validname@invaliddigest:{HEX}", 'unsupported digest algorithm "invaliddigest"', id="digest-unknown-algo"),
    pytest.param("repo@sha384:" + "f" * 96, 'unsupported digest algorithm "sha384"', id="digest-sha384"),
    pytest.param("repo@sha256:abc", 'invalid digest "sha256:abc"', id="digest-under-32-hex"),
    pytest.param("repo@sha256", 'invalid digest "sha256"', id="digest-no-hex"),
    pytest.param("repo@", 'invalid digest ""', id="digest-empty"),
    pytest.param(f"repo@{SHA256}@{SHA256}", "invalid digest", id="two-digests"),
]


@pytest.mark.parametrize("text, registry, repository, tag, digest, full, familiar, api_host", VALID)
def test_valid_references_normalise_as_docker_does(
    text: str, registry: str, repository: str, tag: str | None, digest: str | None, full: str, familiar: str, api_host: str
) -> None:
    ref = parse_reference(text)
    assert (ref.registry, ref.repository, ref.tag, ref.digest) == (registry, repository, tag, digest)
    assert (str(ref), ref.familiar, ref.api_host) == (full, familiar, api_host)
    assert ref.reference == (digest or tag)
    assert parse_reference(full) == ref
    assert parse_reference(familiar) == ref


@pytest.mark.parametrize("text, problem", INVALID)
def test_invalid_references_are_refused_with_a_one_line_message(text: str, problem: str) -> None:
    with pytest.raises(ReferenceError) as caught:
        parse_reference(text)
    message = str(caught.value)
    assert message.startswith('invalid image reference "')
    assert problem in message
    assert len(message.splitlines()) == 1


def test_the_message_names_the_input_and_the_problem() -> None:
    with pytest.raises(ReferenceError, match=r'^invalid image reference "Nginx": repository name must be lowercase$'):
        parse_reference("Nginx")


def test_unprintable_input_is_escaped_so_the_message_stays_on_one_line() -> None:
    with pytest.raises(ReferenceError) as caught:
        parse_reference('ngi"nx\n\u2028')
    assert str(caught.value).startswith('invalid image reference "ngi\\"nx\\n\\u2028": ')


def test_reference_error_is_a_value_error() -> None:
    assert issubclass(ReferenceError, ValueError)


def test_with_reference_replaces_tag_and_digest() -> None:
    ref = parse_reference("nginx:1.25")
    pinned = ref.with_reference(digest=SHA256)
    assert (pinned.tag, pinned.digest, pinned.reference) == (None, SHA256, SHA256)
    assert str(pinned) == f"docker.io/library/nginx@{SHA256}"
    both = ref.with_reference(tag="1.26", digest=SHA256)
    assert (str(both), both.reference) == (f"docker.io/library/nginx:1.26@{SHA256}", SHA256)
    assert ref.with_reference(tag="2") == ImageReference(HUB, "library/nginx", "2", None)
    assert pinned.with_reference() == ImageReference(HUB, "library/nginx", "latest", None)


@pytest.mark.parametrize(
    "tag, digest, problem",
    [
        pytest.param("-bad", None, 'invalid image reference "docker.io/library/nginx:-bad": invalid tag "-bad"', id="tag"),
        pytest.param(None, "sha256:abc", 'invalid image reference "docker.io/library/nginx@sha256:abc": invalid digest', id="digest"),
    ],
)
def test_with_reference_validates(tag: str | None, digest: str | None, problem: str) -> None:
    with pytest.raises(ReferenceError) as caught:
        parse_reference("nginx").with_reference(tag=tag, digest=digest)
    assert str(caught.value).startswith(problem)


def test_a_reference_needs_a_tag_or_a_digest() -> None:
    with pytest.raises(ValueError, match="needs a tag or a digest"):
        ImageReference(HUB, "library/nginx", None, None)
