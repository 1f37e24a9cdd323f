"""Importing this package registers every model family (one module per family)."""

from zoo.models import lenet
from zoo.models import resnet
from zoo.models import densenet
from zoo.models import alexnet
from zoo.models import vgg
from zoo.models import googlenet
from zoo.models import cliquenet
from zoo.models import odenet
