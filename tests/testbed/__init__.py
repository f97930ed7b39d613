"""The real edge/fog/cloud test bed: hosts in network namespaces with SSH, Mosquitto and Docker engines."""

from tests.testbed.testbed import (
    BASE_IMAGE,
    BASE_IMAGE_TARBALL,
    Host,
    Testbed,
    TestbedError,
    base_image_tarball,
    build_base_image,
    enable_docker,
    load,
    status,
    teardown,
    up,
    write_inventory,
)

__all__ = [
    "BASE_IMAGE",
    "BASE_IMAGE_TARBALL",
    "Host",
    "Testbed",
    "TestbedError",
    "base_image_tarball",
    "build_base_image",
    "enable_docker",
    "load",
    "status",
    "teardown",
    "up",
    "write_inventory",
]
