"""Does a Keras 3 model config name code? Judged by an allowlist of the objects Keras ships.

A Keras config is a tree of objects `{"module", "class_name", "config", "registered_name"}`;
load_model imports `module` (safe_mode only stops Lambda's bytecode), looks up `class_name` in it
and builds the object from its config. Some of Keras's own objects are code too: a Lambda layer or
a `__lambda__` object (marshalled bytecode), a TFSMLayer (loads and runs a SavedModel from a path),
the JAX, Flax and torch module wrappers. So the rule is an allowlist, not a denylist: only the
(module, class name) pairs below pass, with Keras's public functions (a loss, a metric, an
activation, written as `class_name: "function"`); anything else names code.
"""

from __future__ import annotations

import re
import typing


def _names(text: str) -> frozenset[str]:
    return frozenset(text.split())


_LAYERS: typing.Final = _names(
    """
    InputLayer Input Dense EinsumDense Embedding Masking Identity Activation Dropout
    SpatialDropout1D SpatialDropout2D SpatialDropout3D GaussianDropout GaussianNoise
    AlphaDropout ActivityRegularization Flatten Reshape Permute RepeatVector Cropping1D
    Cropping2D Cropping3D ZeroPadding1D ZeroPadding2D ZeroPadding3D UpSampling1D
    UpSampling2D UpSampling3D Conv1D Conv2D Conv3D Conv1DTranspose Conv2DTranspose
    Conv3DTranspose Convolution1D Convolution2D Convolution3D SeparableConv1D
    SeparableConv2D DepthwiseConv1D DepthwiseConv2D MaxPooling1D MaxPooling2D MaxPooling3D
    AveragePooling1D AveragePooling2D AveragePooling3D MaxPool1D MaxPool2D MaxPool3D
    AvgPool1D AvgPool2D AvgPool3D GlobalMaxPooling1D GlobalMaxPooling2D GlobalMaxPooling3D
    GlobalAveragePooling1D GlobalAveragePooling2D GlobalAveragePooling3D GlobalMaxPool1D
    GlobalMaxPool2D GlobalMaxPool3D GlobalAvgPool1D GlobalAvgPool2D GlobalAvgPool3D
    BatchNormalization LayerNormalization GroupNormalization UnitNormalization
    RMSNormalization Normalization Add Subtract Multiply Average Maximum Minimum Concatenate
    Dot LSTM GRU SimpleRNN LSTMCell GRUCell SimpleRNNCell StackedRNNCells RNN Bidirectional
    TimeDistributed ConvLSTM1D ConvLSTM2D ConvLSTM3D MultiHeadAttention GroupQueryAttention
    Attention AdditiveAttention ReLU LeakyReLU PReLU ELU Softmax Rescaling Resizing
    CenterCrop RandomFlip RandomRotation RandomZoom RandomContrast RandomTranslation
    RandomCrop RandomBrightness CategoryEncoding Hashing HashedCrossing IntegerLookup
    StringLookup TextVectorization Discretization
    """
)
_INITIALIZERS: typing.Final = _names(
    """
    Constant GlorotNormal GlorotUniform HeNormal HeUniform Identity LecunNormal LecunUniform
    Ones Orthogonal RandomNormal RandomUniform TruncatedNormal VarianceScaling Zeros
    """
)
_OPTIMIZERS: typing.Final = _names(
    """
    SGD Adam AdamW Adamax Adadelta Adagrad Adafactor Ftrl Lion Nadam RMSprop Lamb
    LossScaleOptimizer
    """
)
_SCHEDULES: typing.Final = _names(
    """
    ExponentialDecay PiecewiseConstantDecay PolynomialDecay InverseTimeDecay CosineDecay
    CosineDecayRestarts
    """
)
_LOSSES: typing.Final = _names(
    """
    BinaryCrossentropy BinaryFocalCrossentropy CategoricalCrossentropy
    CategoricalFocalCrossentropy CategoricalHinge CosineSimilarity Dice Hinge Huber
    KLDivergence LogCosh MeanAbsoluteError MeanAbsolutePercentageError MeanSquaredError
    MeanSquaredLogarithmicError Poisson SparseCategoricalCrossentropy SquaredHinge Tversky
    CTC Circle
    """
)
_METRICS: typing.Final = (
    frozenset(
        [
            "Accuracy",
            "BinaryAccuracy",
            "CategoricalAccuracy",
            "SparseCategoricalAccuracy",
            "TopKCategoricalAccuracy",
            "SparseTopKCategoricalAccuracy",
            "AUC",
            "Precision",
            "Recall",
            "F1Score",
            "FBetaScore",
            "Mean",
            "Sum",
            "MeanMetricWrapper",
            "RootMeanSquaredError",
            "MeanIoU",
            "IoU",
            "BinaryIoU",
            "OneHotIoU",
            "OneHotMeanIoU",
            "PrecisionAtRecall",
            "RecallAtPrecision",
            "SensitivityAtSpecificity",
            "SpecificityAtSensitivity",
            "TruePositives",
            "TrueNegatives",
            "FalsePositives",
            "FalseNegatives",
            "R2Score",
            "LogCoshError",
            "ConcordanceCorrelation",
            "PearsonCorrelation",
        ]
    )
    | _LOSSES
)
_MODELS: typing.Final = frozenset({"Sequential", "Functional", "Model"})
_DTYPE_POLICIES: typing.Final = frozenset(
    {"DTypePolicy", "FloatDTypePolicy", "QuantizedDTypePolicy", "QuantizedFloat8DTypePolicy"}
)

SAFE: typing.Final[dict[str | None, frozenset[str]]] = {
    "keras": _MODELS | _DTYPE_POLICIES,
    "keras.models": _MODELS,
    "keras.src.models.functional": frozenset({"Functional"}),
    "keras.src.models.sequential": frozenset({"Sequential"}),
    "keras.src.models.model": frozenset({"Model"}),
    "keras.dtype_policies": _DTYPE_POLICIES,
    "keras.layers": _LAYERS,
    "keras.initializers": _INITIALIZERS,
    "keras.regularizers": frozenset({"L1", "L2", "L1L2", "OrthogonalRegularizer"}),
    "keras.constraints": frozenset({"MaxNorm", "MinMaxNorm", "NonNeg", "UnitNorm"}),
    "keras.optimizers": _OPTIMIZERS,
    "keras.optimizers.schedules": _SCHEDULES,
    "keras.losses": _LOSSES,
    "keras.metrics": _METRICS,
    # Values Keras writes without a module: tensors, arrays, bytes, tuples (not __lambda__, not
    # __typespec__, which names a TensorFlow class).
    None: frozenset(
        {"__keras_tensor__", "__tensor__", "__numpy__", "__bytes__", "__tuple__", "__ellipsis__"}
        | {"__slice__"}
    ),
}
"""(module, class name) pairs that name none of the model's own code."""

# Public Keras functions, written {"class_name": "function", "module": ..., "config": NAME,
# "registered_name": NAME} (serialize_with_public_fn): losses, metrics, activations.
_FUNCTION_MODULE: typing.Final = re.compile(r"keras(\.src)?\.(losses|metrics|activations)(\.\w+)*")


def code(config: object) -> str | None:
    """What in a Keras config names code, if anything."""
    pending = [config]
    while pending:
        item = pending.pop()
        if isinstance(item, list):
            pending.extend(item)
            continue
        if not isinstance(item, dict):
            continue
        if "class_name" in item:
            found = _object(item)
            if found is not None:
                return found
        pending.extend(item.values())
    return None


def _object(item: dict[str, object]) -> str | None:
    class_name, module = item.get("class_name"), item.get("module")
    registered = item.get("registered_name")
    if class_name == "function":
        name = item.get("config")
        if (
            isinstance(module, str)
            and _FUNCTION_MODULE.fullmatch(module)
            and isinstance(name, str)
            and name.isidentifier()
            and registered in (None, name)
        ):
            return None
        return f"names function {name!r} of module {module!r}, not one of Keras's own"
    if not isinstance(class_name, str) or not (module is None or isinstance(module, str)):
        return f"names an object it does not spell as Keras does ({class_name!r})"
    if class_name not in SAFE.get(module, frozenset()):
        where = f" of module {module!r}" if module is not None else ""
        return f"names {class_name!r}{where}, which is not a Keras object known to hold no code"
    if registered is not None and registered != class_name:
        return f"names registered object {registered!r}"
    return None
