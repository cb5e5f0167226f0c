"""Real pairs of training scripts through the tracer and the comparator: verdict and top finding."""

from __future__ import annotations

import numpy as np
import pytest

from . import scripts as s
from . import scripts_f as f4
from . import scripts_g as g5
from . import scripts_h as h6
from . import scripts_i as i7
from . import scripts_j as j8
from . import scripts_k as k9
from . import scripts_l as l10
from . import scripts_m as m11
from . import scripts_models as m
from . import scripts_more as x
from . import scripts_n as n12
from . import scripts_o as o13

# (id, run a, run b, verdict, top finding kind or None)
CASES = [
    # fit(sample_weight=...) against fit() over a tf.data pipeline of (x, y): the weights go in the dataset
    ("weights_lost_moving_to_a_dataset", o13.fit_regression_sample_weighted, o13.fit_regression_dataset_weights_lost,
     "diverged", "sample_weighting"),
    # the same seed, another initializer: the start differs, and the initializers are named
    ("initializers_differ", o13.fit_hidden_glorot_uniform, o13.fit_hidden_he_normal, "not_comparable",
     "init_mismatch"),
    # fit() masks the padding; a hand-written tf.nn loss averages over every entry: the mask is named
    ("hand_written_loss_counts_padding", i7.fit_masked_gru_tagger, o13.tape_masked_gru_tagger_tf_nn_loss,
     "diverged", "gradient_mismatch"),
    # the generator's optimizer also steps the discriminator: the extra variables at the generator's steps,
    # not an optimizer re-created (the two optimizers' variable sets overlap)
    ("gan_generator_step_moves_discriminator", j8.gan_two_tapes_function, o13.gan_generator_step_moves_discriminator,
     "diverged", "divergence"),
    # the loop calls scale_loss and differentiates the loss it scaled: its updates the loss scale times too small
    ("scale_loss_called_result_unused", o13.tape_mixed_loss_scaled, o13.tape_mixed_scale_loss_called_unused,
     "diverged", "loss_scaling"),
    # the step called again on every third batch to log the loss: the repeated batches named
    ("step_called_again_on_some_batches", o13.tape_digits_step_once_per_batch, o13.tape_digits_step_called_again_to_log,
     "diverged", "repeated_step"),
    # tf-keras: the loop's tf.function traced again for the partial batch draws other Dropout masks
    ("tf_keras_dropout_retraced_for_partial_batch", o13.fit_tf_keras_dropout_partial_batch,
     o13.tape_tf_keras_dropout_partial_batch, "diverged", "divergence"),
    # fit() shuffles the sorted data; the loop batches it class by class: named for the loop's run
    ("sorted_by_class_against_fit", o13.fit_four_classes_one_hot_shuffled, o13.tape_four_classes_sorted, "diverged",
     "unshuffled_data"),
    # accumulators never zeroed: the same loss at step 1 with other gradients, ranked before the NaN it leads to
    ("accumulator_never_reset", o13.tape_accumulated_and_reset, o13.tape_accumulated_never_reset, "diverged",
     "divergence"),
    # Keras' CosineSimilarity (negative by definition) against a hand-written cosine minimised: run b climbs
    ("cosine_minimised_by_hand", o13.fit_cosine_similarity_onto_one_hot, o13.tape_cosine_minimised, "diverged", "gradient_sign"),
    # logits with from_logits=True against a sigmoid's output with from_logits=False: both right
    ("eq_logits_against_sigmoid_probabilities", o13.fit_binary_logits_from_logits,
     o13.fit_binary_sigmoid_probabilities, "equivalent", "loss_mismatch"),
    # layer arguments that change nothing at their settings: context, measured on the steps
    ("relu_as_activation_layer", n12.fit_digits_plain_net, n12.fit_digits_relu_as_layer, "equivalent", None),
    ("max_norm_never_binds", n12.fit_digits_plain_net, n12.fit_digits_max_norm_never_binds, "equivalent", None),
    ("l2_by_compute_loss", n12.fit_digits_l2_regularizers, n12.fit_digits_l2_in_compute_loss, "equivalent", None),
    # label smoothing in the class that has it, against one without: named beside the class
    ("label_smoothing_beside_sparse", n12.fit_digits_one_hot_smoothed, n12.fit_digits_plain_net, "diverged",
     "loss_mismatch"),
    # tf-keras: a freeze set after compile() that fit() does not take in, against a loop that freezes
    ("tf_keras_frozen_after_compile", n12.fit_tf_keras_frozen_after_compile, n12.tape_tf_keras_frozen_base,
     "diverged", "trainable_mismatch"),
    ("tf_keras_frozen_after_compile_head_only", n12.fit_tf_keras_frozen_after_compile,
     n12.tape_tf_keras_head_variables_only, "diverged", "trainable_mismatch"),
    # a base frozen in one run, its weights left out of the other's gradients: only BatchNormalization's mode differs
    ("frozen_base_against_head_only", n12.fit_bn_base_frozen, n12.tape_bn_head_variables_only, "diverged",
     "frozen_state"),
    # a layer's own counter advanced again by a training-mode pass outside the tape: the cause of the departure
    ("state_advanced_outside_the_steps", n12.fit_warmup_counter, n12.tape_warmup_counter_metric_in_training_mode,
     "diverged", "training_outside_steps"),
    # keras.io's fine-tuning: the base unfrozen for a second phase, by fit() and by a loop's new optimizer
    # keras.io's GAN: the loop's discriminator steps record the concatenated batch, fit()'s the real one;
    # its latent draws differ anyway: not comparable step by step, said as such
    ("gan_fit_against_loop", n12.fit_gan_train_step, n12.tape_gan_loop, "not_comparable", "data_mismatch"),
    # the same inputs with labels sliced one row off: named as labels paired with other inputs
    ("labels_shifted_one_row", n12.fit_digits_plain_net, n12.tape_digits_labels_shifted, "diverged", "data_mismatch"),
    # equal-shaped layers paired by the order the forward pass calls them, not the order they were created
    ("equal_layers_created_backwards", n12.tape_digits_two_hidden_sequential,
     n12.tape_digits_two_hidden_created_backwards, "equivalent", None),
    # a loss factor moved into the learning rate: the same updates with SGD, not with Adam
    ("loss_factor_in_learning_rate_sgd", n12.fit_digits_sgd_005, n12.tape_digits_loss_doubled_sgd_0025, "equivalent",
     None),
    ("loss_factor_in_learning_rate_adam", n12.fit_digits_adam_005, n12.tape_digits_loss_times_005_adam_1, "diverged",
     "loss_scale"),
    ("transfer_then_fine_tune", n12.fit_transfer_then_fine_tune, n12.tape_transfer_then_fine_tune,
     "equivalent", None),
    # the penalties' gradients taken by a call of their own and added: the same training as fit()'s
    ("penalty_gradients_added_vs_fit", n12.fit_digits_l2_strong, n12.tape_penalty_gradients_added,
     "equivalent", None),
    # gradients over model.weights: BatchNormalization's statistics get None and are written by their layer
    ("bn_gradients_over_all_weights", n12.tape_bn_over_trainable_variables, n12.tape_bn_over_all_weights,
     "equivalent", None),
    # a hand-written L2 penalty computed before the tape opens: in the loss, not in the gradients
    ("l2_penalty_before_tape", n12.tape_digits_l2_inside_tape, n12.tape_digits_l2_before_tape, "diverged",
     "gradient_mismatch"),
    # global_clipnorm in fit() against tf.clip_by_global_norm by hand, a bound neither reaches
    ("clip_unreached_by_hand", n12.fit_digits_adam_global_clipnorm_unreached,
     n12.tape_digits_clip_by_global_norm_unreached, "equivalent", None),
    ("clip_unreached_by_hand_eagerly", n12.fit_digits_adam_global_clipnorm_unreached,
     n12.tape_digits_clip_by_global_norm_unreached_eagerly, "equivalent", None),
    # the same regression labels, rounded through float16 in one run
    ("labels_rounded_float16", n12.fit_regression_labels_f32, n12.fit_regression_labels_f16, "diverged",
     "data_mismatch"),
    # a second training-mode forward pass (for a metric) draws the Dropout masks the loss's pass would have
    ("dropout_metric_pass_first", n12.tape_dropout_one_pass, n12.tape_dropout_metric_pass_first, "diverged",
     "random_draws"),
    # gradient ascent: the gradients negated before the apply, or the loss negated before the tape
    ("gradients_negated", n12.fit_digits_plain_net, n12.tape_digits_gradients_negated, "diverged", "gradient_sign"),
    ("loss_negated", n12.fit_digits_plain_net, n12.tape_digits_loss_negated_eagerly, "diverged", "gradient_sign"),
    # seed 002: Keras mse (mean over 10 outputs) vs reduce_sum(square)/batch
    ("seed002_mse_vs_sum_sgd", s.fit_mse_sgd, s.tape_sum_over_batch_sgd, "diverged", "loss_scale"),
    ("seed002_mse_vs_sum_adam", s.fit_mse_adam, s.tape_sum_over_batch_adam, "diverged", "loss_scale"),
    # seeds 000/003: BN + Dropout called without training=True in the tape
    ("seed003_training_flag", s.fit_bn_dropout, s.tape_bn_dropout_no_training_flag, "diverged",
     "training_mode_mismatch"),
    ("bn_frozen_in_one_run", s.tape_bn_dropout_training, s.tape_bn_frozen, "diverged", "frozen_state"),
    # seed 001: equal loss, gradients differ
    ("seed001_tf_function_loss", s.loss_plain, s.loss_decorated, "diverged", "gradient_mismatch"),
    ("per_sample_loss_vector", s.fit_digits_sgd_sparse, s.tape_per_sample_loss, "diverged", "loss_scale"),
    ("l2_forgotten", s.fit_l2, s.tape_l2_forgotten, "diverged", "regularization_mismatch"),
    # regularization of another size: a hand-written penalty (tf.nn.l2_loss halves), added twice,
    # regularizers of another factor under a hand-written data loss
    ("l2_by_hand_other_factor", s.fit_l2, s.tape_l2_by_hand_other_factor, "diverged", "regularization_mismatch"),
    ("reg_losses_added_twice", s.fit_l2, s.fit_l2_train_step_adds_twice, "diverged", "regularization_mismatch"),
    ("l2_factor_differs", s.tape_l2_hand_mse, s.tape_l2_hand_mse_weaker, "diverged", "regularization_mismatch"),
    ("l2_by_hand_on_unregularized_model", s.fit_l2, s.tape_hand_mse_hand_penalty, "diverged",
     "regularization_mismatch"),
    ("label_broadcast", s.fit_regression_mse, s.tape_regression_broadcast, "diverged", "shape_broadcast"),
    ("class_weight_one_run", s.fit_class_weight, s.fit_unweighted, "diverged", "sample_weighting"),
    # "accuracy" resolves per label encoding: each class right for its labels, the same training
    ("accuracy_per_label_encoding", s.fit_metric_sparse, s.fit_metric_onehot, "equivalent", None),
    # the same training and metric class; the metric cannot fit one run's labels
    ("metric_does_not_fit_labels", s.fit_metric_categorical_on_onehot, s.fit_metric_categorical_on_sparse,
     "diverged", "metric_mismatch"),
    # the same examples and labels, the inputs scaled (x/16 forgotten) or normalised differently
    ("inputs_scaled_by_16", s.fit_digits_sgd_sparse, s.fit_digits_unnormalised, "diverged", "input_scale"),
    ("inputs_normalised_differently", s.fit_iris, s.fit_iris_centred_differently, "diverged", "input_scale"),
    # the optimizer steps twice on every batch: the same gradients applied again, the step called again
    ("applied_twice_per_batch", s.tape_digits_sgd_sparse, s.tape_applied_twice, "diverged", "repeated_step"),
    ("train_step_called_twice", s.fit_digits_sgd_sparse, s.tape_step_called_twice, "diverged", "repeated_step"),
    ("optimizer_recreated", s.fit_digits_adam, s.tape_optimizer_each_step, "diverged", "optimizer_mismatch"),
    ("momentum_differs", s.fit_digits_sgd_sparse, s.fit_digits_momentum, "diverged", "optimizer_mismatch"),
    ("clip_per_variable", s.fit_digits_sgd_sparse, s.tape_clip_per_variable, "diverged", "gradient_scale"),
    ("head_only_differentiated", s.fit_digits_sgd_sparse, s.tape_head_only, "diverged", "missing_gradient"),
    ("frozen_by_zeroed_gradients", s.fit_digits_sgd_sparse, s.tape_zeroed_gradients, "diverged", "not_applied"),
    ("numpy_roundtrip", s.fit_digits_sgd_sparse, s.tape_numpy_roundtrip, "diverged", "missing_gradient"),
    ("msle_by_hand", s.fit_msle, s.tape_log_of_linear, "diverged", "gradient_mismatch"),
    ("hand_log_loss_saturates", s.fit_bce_saturating, s.tape_hand_log_loss, "diverged", "numerics"),
    ("weighted_mean_by_hand", s.fit_sample_weighted, s.tape_weighted_mean_by_hand, "diverged", "loss_scale"),
    ("weighted_mean_by_hand_none_reduction", s.fit_sample_weighted, s.tape_weighted_mean_by_hand_none_reduction,
     "diverged", "loss_scale"),
    ("mask_mean_over_all", s.fit_masked_tagger, s.tape_masked_mean_over_all, "diverged", "loss_scale"),
    ("loss_weights_forgotten", s.fit_loss_weights, s.tape_loss_weights_forgotten, "diverged",
     "gradient_mismatch"),
    ("mixed_precision_one_run", s.fit_mixed_precision, s.tape_mixed_precision_unscaled, "diverged",
     "loss_scaling"),
    # a tf.data .shuffle() in one tape loop only: the pipeline recorded names the run that shuffles
    ("dataset_shuffled_in_one_loop", s.tape_digits_dataset, s.tape_digits_dataset_shuffled, "not_comparable",
     "data_mismatch"),
    ("fit_shuffles_by_default", s.tape_digits_sgd_sparse, s.fit_digits_shuffled, "not_comparable",
     "data_mismatch"),
    ("other_seed_and_order", s.fit_digits_sgd_sparse, s.fit_other_seed, "not_comparable", None),
    # equivalent: the same training written two correct ways
    ("eq_fit_vs_tape", s.fit_digits_sgd_sparse, s.tape_digits_sgd_sparse, "equivalent", None),
    ("eq_eager_vs_tf_function", s.iris_eager, s.iris_tf_function, "equivalent", None),
    ("eq_xla_vs_not", s.fit_no_xla, s.fit_xla, "equivalent", None),
    ("eq_train_step_vs_fit", s.plain_fit_functional, s.custom_train_step_fit, "equivalent", None),
    ("eq_keras3_vs_tf_keras", s.fit_keras3, s.fit_tf_keras, "equivalent", None),
    ("eq_bn_dropout_eager_vs_function", s.tape_bn_dropout_training, s.fit_bn_dropout, "equivalent", None),
    # the scaling moved into the model (a Rescaling layer): the same training
    ("eq_rescaling_layer_vs_scaled_data", s.fit_digits_sgd_sparse, s.fit_digits_rescaled_in_model, "equivalent",
     None),
    ("eq_dropout_xla_not_bit_comparable", s.fit_bn_dropout_xla, s.tape_bn_dropout_training, "equivalent", None),
    # gradients zipped with the differentiated variables in another order (equal shapes)
    ("grads_zipped_reordered", s.fit_twin_hidden, s.tape_grads_zipped_reordered, "diverged",
     "misapplied_gradient"),
    # Keras loss functions (not loss objects) called in the tape: recorded like loss objects
    ("loss_function_logits_forgotten", s.fit_digits_sgd_sparse, s.tape_loss_function_logits_forgotten,
     "diverged", "loss_mismatch"),
    ("loss_function_summed", s.fit_digits_sgd_sparse, s.tape_loss_function_summed, "diverged", "loss_scale"),
    ("eq_fit_vs_loss_function", s.fit_digits_sgd_sparse, s.tape_loss_function_mean, "equivalent", None),
    # the wrong loss differentiated: one output's loss of a two-output model instead of the total
    ("one_output_loss_differentiated", s.fit_two_outputs, s.tape_one_output_loss_differentiated, "diverged",
     "loss_not_differentiated"),
    # tf.stop_gradient around an intermediate: the layers below get None, or zeros put in its place
    ("stop_gradient_intermediate", s.fit_encoder_head, s.tape_stop_gradient_intermediate, "diverged",
     "missing_gradient"),
    ("stop_gradient_zeros_for_none", s.fit_encoder_head, s.tape_stop_gradient_zero_gradients, "diverged",
     "zero_gradient"),
    # a two-input model fed a dict by fit(), by a loop that swaps the two inputs (or not)
    ("eq_two_inputs", s.fit_two_inputs, s.tape_two_inputs, "equivalent", None),
    ("two_inputs_swapped", s.fit_two_inputs, s.tape_two_inputs_swapped, "diverged", "input_order"),
    # fit() on (x, y, w) batches weights each sample's loss; the loop drops w
    ("dataset_weights_forgotten", s.fit_dataset_sample_weights, s.tape_dataset_weights_forgotten, "diverged",
     "sample_weighting"),
    # the same examples and labels; the columns standardised in one run only (no single factor and
    # offset relates the inputs), or by a Normalization layer in the model instead of in the data
    ("standard_scaler_one_run", s.fit_wine_standardised, s.tape_wine_raw, "diverged", "input_scale"),
    ("eq_normalization_layer_vs_standardised_data", s.fit_wine_normalization_layer, s.tape_wine_standardised,
     "equivalent", None),
    # AdamW(weight_decay=...) in one run, L2 regularizers added to the loss in the other
    ("adamw_vs_l2_in_loss", s.fit_digits_adamw, s.tape_digits_adam_l2, "diverged", "regularization_mismatch"),
    # the same inputs, the targets standardised in one run only, or class indices counted from 1
    ("target_standardised_one_run", s.fit_diabetes_raw_target, s.tape_diabetes_standardised_target, "diverged",
     "label_scale"),
    ("class_indices_shifted", s.fit_iris_labels_from_0, s.fit_iris_labels_from_1, "diverged", "label_scale"),
    ("targets_standardised_per_column", s.fit_two_targets_raw, s.fit_two_targets_standardised, "diverged",
     "label_scale"),
    # targets smoothed by hand in one run, label_smoothing= in the other's loss: a map the loss undoes
    ("eq_label_smoothing_in_targets_vs_loss", s.fit_cce_label_smoothing, s.tape_cce_smoothed_targets,
     "equivalent", None),
    # gradient_accumulation_steps=2 against a loop accumulating by hand (averaged or not), or against
    # batches twice as large: compared update by update
    ("eq_accumulation_by_hand", s.fit_digits_accumulated, s.tape_accumulated_by_hand, "equivalent", None),
    ("eq_accumulation_vs_double_batch", s.fit_digits_accumulated, s.tape_digits_sgd_sparse, "equivalent", None),
    ("accumulated_sum_not_averaged", s.fit_digits_accumulated, s.tape_accumulated_summed, "diverged",
     "optimizer_mismatch"),
    # both give fit() sample weights; a custom train_step calls compute_loss without them
    ("train_step_drops_sample_weights", s.fit_digits_sample_weights, s.fit_train_step_drops_weights, "diverged",
     "sample_weighting"),
    # a Keras loss with label_smoothing against a hand-written log loss without it
    ("label_smoothing_vs_hand_loss", s.fit_bce_label_smoothing, s.tape_hand_log_loss_unsmoothed, "diverged",
     "gradient_mismatch"),
    # a LearningRateScheduler callback lowers fit()'s rate from the second epoch; the other run keeps it
    ("lr_callback_one_run", s.fit_lr_callback_two_epochs, s.fit_two_epochs, "diverged", "optimizer_mismatch"),
    # a LossScaleOptimizer in both runs; the loop differentiates the unscaled loss
    ("loss_scale_optimizer_unscaled_loss", s.fit_mixed_precision, s.tape_loss_scale_optimizer_unscaled_loss,
     "diverged", "loss_scaling"),
    # the loop calls the model again in training mode for a metric: Dropout draws its masks twice a step
    ("metric_forward_redraws_dropout", s.fit_dropout_mlp, s.tape_dropout_metric_forward, "diverged",
     "training_outside_steps"),
    # Dropout in Keras 3 and in tf-keras (the same weights): other random streams, not an init mismatch
    ("eq_dropout_keras3_vs_tf_keras", s.fit_keras3_dropout, s.fit_tf_keras_dropout, "equivalent", None),
    # weights updated by hand (`v.assign_sub(lr * g)`): steps of the tracer's ManualUpdate optimizer
    ("hand_written_sgd", s.fit_digits_sgd_sparse, m11.tape_digits_by_hand, "equivalent", None),
    ("hand_written_sgd_eager_assign", s.tape_digits_sgd_sparse, m11.tape_digits_by_hand_eager, "equivalent", None),
    ("hand_written_sgd_xla", m11.tape_digits_by_hand, m11.tape_digits_by_hand_xla, "equivalent", None),
    ("hand_written_other_rate", s.fit_digits_sgd_sparse, m11.tape_digits_by_hand_half_rate, "diverged",
     "optimizer_mismatch"),
    ("hand_written_momentum", s.fit_digits_momentum, m11.tape_digits_momentum_by_hand, "equivalent", None),
    ("hand_written_against_adam", s.fit_digits_adam, m11.tape_digits_by_hand, "diverged", "optimizer_mismatch"),
    ("adam_written_by_hand", s.fit_digits_adam, m11.tape_digits_adam_by_hand, "equivalent", None),
    ("gan_halves_by_hand", m11.tape_gan_two_sgds, m11.tape_gan_by_hand, "equivalent", None),
    ("gan_generator_rate_by_hand_wrong", m11.tape_gan_two_sgds, m11.tape_gan_by_hand_generator_rate_wrong,
     "diverged", "optimizer_mismatch"),
    ("clipnorm_left_out_by_hand", m11.fit_digits_sgd_clipnorm, m11.tape_digits_by_hand, "diverged",
     "optimizer_mismatch"),
    ("schedule_by_hand", m11.fit_digits_sgd_exponential_decay, m11.tape_digits_by_hand_decayed, "equivalent", None),
    ("schedule_by_hand_staircase", m11.fit_digits_sgd_exponential_decay, m11.tape_digits_by_hand_staircase,
     "diverged", "optimizer_mismatch"),
    ("weight_decay_by_hand_beside_adam", m11.fit_digits_adamw_decay_05, m11.tape_digits_adam_decay_by_hand, "equivalent",
     None),
    ("weight_decay_by_hand_too_strong", m11.fit_digits_adamw_decay_05, m11.tape_digits_adam_decay_by_hand_too_strong,
     "diverged", "optimizer_mismatch"),
    ("hand_written_training_flag_forgotten", m11.fit_bn_dropout_sgd, m11.tape_bn_dropout_by_hand_no_training_flag,
     "diverged", "training_mode_mismatch"),
    ("hand_written_bn_dropout", m11.fit_bn_dropout_sgd, m11.tape_bn_dropout_by_hand, "equivalent", None),
    ("module_by_hand_eager_vs_function", m11.tape_module_regression_eager, m11.tape_module_regression_function,
     "equivalent", None),
    ("module_by_hand_other_rate", m11.tape_module_regression_function, m11.tape_module_regression_other_rate,
     "diverged", "optimizer_mismatch"),
]

# Other models, layers, losses and optimizers (scripts_models.py): recurrent and convolutional text and
# sequence models, multi-output models, normalisation layers, frozen bases, schedules, batch sizes.
CASES += [
    # a GRU without dropout computes the same in both modes: no training= in the loop is harmless ...
    ("eq_gru_no_dropout_no_training_flag", m.fit_gru_text, m.tape_gru_text_no_training_flag, "equivalent", None),
    # ... with dropout it is not
    ("gru_dropout_no_training_flag", m.fit_gru_text_dropout, m.tape_gru_text_dropout_no_training_flag, "diverged",
     "training_mode_mismatch"),
    ("gru_from_logits_forgotten", m.fit_gru_text, m.tape_gru_text_from_logits_forgotten, "diverged",
     "loss_mismatch"),
    ("eq_conv1d_fit_vs_eager_loop", m.fit_conv1d, m.tape_conv1d_eager, "equivalent", None),
    ("eq_conv1d_fit_vs_jit_loop", m.fit_conv1d, m.tape_conv1d_jit, "equivalent", None),
    ("eq_conv1d_eager_vs_jit_loop", m.tape_conv1d_eager, m.tape_conv1d_jit, "equivalent", None),
    ("conv1d_nesterov_one_run", m.fit_conv1d, m.tape_conv1d_nesterov, "diverged", "optimizer_mismatch"),
    ("conv1d_l2_forgotten", m.fit_conv1d_l2, m.tape_conv1d_l2_forgotten, "diverged", "regularization_mismatch"),
    ("eq_wine_loss_weights_by_hand", m.fit_wine_loss_weights, m.tape_wine_loss_weights, "equivalent", None),
    ("wine_loss_weights_swapped", m.fit_wine_loss_weights, m.tape_wine_loss_weights_swapped, "diverged",
     "gradient_mismatch"),
    ("eq_onehot_cce_vs_sparse_cce", m.fit_iris_sparse_cce, m.tape_iris_onehot_cce, "equivalent", None),
    ("eq_hand_softmax_log_vs_from_logits", m.fit_iris_sparse_cce, m.tape_iris_hand_softmax_log, "equivalent",
     None),
    # reduction='sum' with the learning rate divided by the batch size: SGD takes the same steps
    ("eq_sum_reduction_rate_divided", m.fit_iris_sparse_cce, m.tape_iris_sum_reduction_lr_scaled, "equivalent",
     None),
    ("mse_sum_reduction", m.fit_three_targets_mse, m.tape_three_targets_mse_sum_reduction, "diverged",
     "loss_scale"),
    ("eq_mean_over_batch_then_outputs", m.fit_three_targets_mse, m.tape_three_targets_mean_axis0_then_mean,
     "equivalent", None),
    ("mean_over_batch_then_sum_over_outputs", m.fit_three_targets_mse, m.tape_three_targets_mean_axis0_then_sum,
     "diverged", "loss_scale"),
    ("eq_layernorm_no_training_flag", m.fit_layernorm, m.tape_layernorm_no_training_flag, "equivalent", None),
    ("layernorm_dropout_no_training_flag", m.fit_layernorm_dropout, m.tape_layernorm_dropout_no_training_flag,
     "diverged", "training_mode_mismatch"),
    ("eq_frozen_base_with_bn", m.fit_frozen_base, m.tape_frozen_base_training_true, "equivalent", None),
    ("adam_epsilon_differs", m.fit_digits_adam_eps, m.tape_digits_adam_eps_1e8, "diverged", "optimizer_mismatch"),
    ("clipnorm_vs_global_clipnorm_loop", m.fit_digits_clipnorm, m.tape_digits_global_clipnorm, "diverged",
     "optimizer_mismatch"),
    ("schedule_per_step_vs_per_epoch", m.fit_digits_schedule_per_step, m.tape_digits_schedule_per_epoch,
     "diverged", "optimizer_mismatch"),
    ("applies_every_other_batch", m.fit_digits_adam_eps, m.tape_digits_applies_every_other_batch, "diverged",
     "skipped_batches"),
    ("batch_size_differs", m.fit_digits_adam_eps, m.tape_digits_batch_64, "not_comparable", "data_mismatch"),
    ("eq_subclassed_vs_sequential", m.fit_digits_adam_eps, m.tape_digits_adam_subclassed, "equivalent", None),
    ("mixed_precision_policy_one_run", m.fit_digits_adam_eps, m.fit_digits_mixed_precision, "diverged",
     "loss_scaling"),
    ("eq_steps_per_execution", m.fit_digits_adam_eps, m.fit_digits_adam_steps_per_execution, "equivalent", None),
    ("eq_kernel_constraint_fit_vs_loop", m.fit_digits_maxnorm, m.tape_digits_maxnorm, "equivalent", None),
    ("eq_class_weight_by_hand", m.fit_breast_cancer_class_weight, m.tape_breast_cancer_weights_by_hand,
     "equivalent", None),
    ("class_weight_not_in_loop", m.fit_breast_cancer_class_weight, m.tape_breast_cancer_unweighted, "diverged",
     "sample_weighting"),
    # a metric computed by calling the model again in training mode: BN's statistics move twice a step
    # (the extra calls are the cause; the statistics' departure is their evidence)
    ("bn_statistics_moved_by_metric_forward", m.fit_bn_mlp, m.tape_bn_mlp_metric_forward_in_training_mode,
     "diverged", "training_outside_steps"),
    ("eq_huber_by_hand", m.fit_huber, m.tape_huber_by_hand, "equivalent", None),
    ("eq_sigmoid_hand_log_loss_with_validation_data", m.fit_bc_sigmoid, m.tape_bc_sigmoid_hand_log_loss,
     "equivalent", None),
    ("eq_clipvalue_by_hand_two_epochs", m.fit_digits_softmax_two_epochs, m.tape_digits_softmax_two_epochs_clip_by_hand,
     "equivalent", None),
    # fit() keeps the last, partial batch of an epoch; the loop's tf.data drops it
    ("partial_last_batch_dropped", m.fit_digits_partial_last_batch, m.tape_digits_drop_remainder, "diverged",
     "skipped_batches"),
    ("eq_fit_once_vs_fit_per_batch", m.fit_digits_once, m.fit_digits_per_batch, "equivalent", None),
    # gradients of two losses taken one by one and added: the step records only the last loss
    ("eq_two_losses_differentiated_separately", m.fit_wine_unweighted, m.tape_wine_two_gradients_summed,
     "equivalent", None),
    ("eq_adam_vs_adamw_without_decay", m.fit_digits_adam_eps, m.tape_digits_adamw_no_decay, "equivalent", None),
    ("schedule_one_step_early", m.fit_digits_piecewise_schedule, m.tape_digits_schedule_one_step_early, "diverged",
     "optimizer_mismatch"),
    ("eq_sequential_vs_functional_copied_weights", m.fit_digits_rmsprop, m.tape_digits_functional_copied_weights,
     "equivalent", None),
    ("eq_masked_pooling_fit_vs_loop", m.fit_text_masked_pooling, m.tape_text_masked_pooling, "equivalent", None),
    ("eq_gaussian_noise_fit_vs_loop", m.fit_gaussian_noise, m.tape_gaussian_noise, "equivalent", None),
    ("model_built_each_epoch", m.fit_digits_two_epochs_sgd, m.tape_digits_model_built_each_epoch, "diverged",
     "model_recreated"),
]

# A third set (scripts_more.py): attention blocks, embeddings, losses by string or with other
# arguments, optimizer and layer settings, data held out by fit(), initialisations, frozen layers.
CASES += [
    ("eq_attention_fit_vs_loop", x.fit_attention, x.tape_attention, "equivalent", None),
    ("attention_dropout_no_training_flag", x.fit_attention, x.tape_attention_no_training_flag, "diverged",
     "training_mode_mismatch"),
    ("embedding_mask_zero_one_run", x.fit_embedding_masked, x.tape_embedding_mask_forgotten, "diverged",
     "layer_config_mismatch"),
    ("cce_string_on_logits", x.fit_cce_logits, x.fit_cce_string_on_logits, "diverged", "loss_mismatch"),
    ("label_smoothing_one_run", x.fit_cce_logits, x.tape_cce_label_smoothing, "diverged", "loss_mismatch"),
    ("eq_cce_function_from_logits", x.fit_cce_logits, x.tape_cce_function_from_logits, "equivalent", None),
    ("eq_string_optimizer_and_loss", x.fit_strings, x.tape_objects_defaults, "equivalent", None),
    ("adam_string_default_lr", x.fit_strings, x.tape_objects_lr_1e2, "diverged", "optimizer_mismatch"),
    # Keras 3 reads the logits under a softmax/sigmoid whatever from_logits says: the same loss
    ("eq_softmax_head_from_logits_true", x.fit_strings, x.tape_softmax_from_logits_true, "equivalent",
     "loss_mismatch"),
    ("eq_sigmoid_head_from_logits_true", x.fit_sigmoid_bce, x.tape_sigmoid_bce_from_logits, "equivalent",
     "loss_mismatch"),
    ("huber_by_hand_other_delta", x.fit_huber_delta_1, x.tape_huber_by_hand_delta_half, "diverged",
     "gradient_mismatch"),
    ("mse_vs_mae", x.fit_mse_regression, x.tape_mae_regression, "diverged", "loss_mismatch"),
    ("schedule_vs_constant_lr", x.fit_digits_decay_schedule, x.tape_digits_constant_lr, "diverged",
     "optimizer_mismatch"),
    ("clipvalue_one_run", x.fit_digits_sgd_83, x.tape_digits_clipvalue, "diverged", "optimizer_mismatch"),
    ("eq_reduce_retracing", x.fit_digits_sgd_83, x.tape_digits_reduce_retracing, "equivalent", None),
    ("other_seed_same_data", x.fit_digits_sgd_83, x.fit_digits_other_seed, "not_comparable", "init_mismatch"),
    ("sample_weight_fit_one_run", x.fit_digits_sgd_83, x.fit_digits_sample_weight_one_run, "diverged",
     "sample_weighting"),
    ("sample_weight_in_loop_only", x.fit_sigmoid_bce, x.tape_sigmoid_bce_sample_weight, "diverged",
     "sample_weighting"),
    ("validation_split_vs_all_data", x.fit_digits_validation_split, x.tape_digits_all_data_two_epochs, "diverged",
     "validation_split_mismatch"),
    ("eq_extra_identity_layer", x.fit_digits_sgd_83, x.fit_digits_extra_identity_layer, "equivalent", None),
    ("eq_train_step_without_metrics", x.fit_digits_sgd_83, x.fit_digits_no_metrics_train_step, "equivalent", None),
    ("bn_momentum_differs", x.fit_bn_drop, x.fit_bn_momentum_09, "diverged", "layer_config_mismatch"),
    ("dropout_rate_differs", x.fit_bn_drop, x.fit_dropout_05, "diverged", "layer_config_mismatch"),
    ("eq_model_variables_in_tape", x.fit_bn_drop, x.tape_bn_drop_model_variables, "equivalent", None),
    # a validation batch scored with training=True after each step: other masks, BN statistics moved
    ("bn_dropout_moved_by_validation_forward", x.fit_bn_drop, x.tape_bn_drop_validation_forward_in_training_mode,
     "diverged", "training_outside_steps"),
    # built by model.build() before its layers exist: the start is judged on the step-0 loss
    ("eq_subclassed_training_not_passed", x.fit_sequential_dropout, x.tape_subclassed_dropout_training_not_passed,
     "equivalent", None),
    ("eq_frozen_after_compile", x.fit_frozen_before_compile, x.fit_frozen_after_compile, "equivalent", None),
    ("frozen_one_run", x.fit_not_frozen, x.fit_frozen_before_compile, "diverged", "trainable_mismatch"),
    ("freeze_between_fits_without_recompile", x.fit_freeze_then_recompile, x.fit_freeze_without_recompile,
     "diverged", "trainable_mismatch"),
    ("eq_conv2d_fit_vs_eager", x.fit_conv2d, x.tape_conv2d_eager, "equivalent", None),
    ("rmsprop_rho_differs", x.fit_conv2d, x.tape_conv2d_rmsprop_rho, "diverged", "optimizer_mismatch"),
    ("other_head_structure", x.fit_conv2d, x.tape_conv2d_global_pooling, "not_comparable", "structure_mismatch"),
    # augmentation layers in the model: Keras 3's default to training mode when model(x) passes none
    ("eq_augmentation_fit_vs_loop", x.fit_augmented_conv, x.tape_augmented_conv, "equivalent", None),
    ("eq_augmentation_no_training_flag", x.fit_augmented_conv, x.tape_augmented_conv_no_training_flag, "equivalent",
     None),
    ("augmentation_dropout_no_training_flag", x.fit_augmented_conv_dropout,
     x.tape_augmented_conv_dropout_no_training_flag, "diverged", "training_mode_mismatch"),
    # the same seed, a Normalization layer adapted on other data: the start differs in that state
    ("normalization_adapted_on_other_data", x.fit_wine_adapted_on_all, x.tape_wine_adapted_on_first_batch,
     "not_comparable", "init_mismatch"),
    ("eq_label_column_vs_flat", x.fit_digits_label_column, x.tape_digits_label_flat, "equivalent", None),
    ("ignore_class_one_run", x.fit_digits_label_column, x.tape_digits_ignore_class_0, "diverged", "loss_mismatch"),
]

# A fourth set (scripts_f.py): LSTMs (masked, bidirectional, recurrent dropout), separable convolutions,
# spatial dropout, regression losses and reductions, the less common optimizers, warm-up schedules,
# clipping by hand, class weights as sample weights, train steps with metrics, tf.data, activity
# regularizers and add_loss, EMA of the weights.
CASES += [
    ("eq_lstm_fit_vs_unrolled_loop", f4.fit_lstm_rows, f4.tape_lstm_rows_unrolled, "equivalent", None),
    ("lstm_recurrent_dropout_no_training_flag", f4.fit_lstm_rows_recurrent_dropout,
     f4.tape_lstm_rows_recurrent_dropout_no_training_flag, "diverged", "training_mode_mismatch"),
    ("eq_bilstm_masked_fit_vs_loop", f4.fit_bilstm_masked, f4.tape_bilstm_masked, "equivalent", None),
    ("bilstm_mask_forgotten", f4.fit_bilstm_masked, f4.tape_bilstm_mask_forgotten, "diverged",
     "layer_config_mismatch"),
    ("masking_layer_one_run", f4.fit_lstm_masking_layer, f4.tape_lstm_without_masking_layer, "diverged",
     "structure_mismatch"),
    ("eq_separable_fit_vs_eager", f4.fit_separable, f4.tape_separable_eager, "equivalent", None),
    ("separable_padding_differs", f4.fit_separable, f4.tape_separable_valid_padding, "diverged",
     "layer_config_mismatch"),
    ("spatial_dropout_no_training_flag", f4.fit_conv1d_spatial_dropout,
     f4.tape_conv1d_spatial_dropout_no_training_flag, "diverged", "training_mode_mismatch"),
    ("layernorm_vs_batchnorm", f4.fit_layernorm_mlp, f4.tape_batchnorm_mlp, "diverged", "structure_mismatch"),
    ("eq_logcosh_by_hand", f4.fit_logcosh, f4.tape_logcosh_by_hand, "equivalent", None),
    ("huber_instead_of_logcosh", f4.fit_logcosh, f4.tape_huber_instead_of_logcosh, "diverged", "loss_mismatch"),
    ("mae_sum_reduction", f4.fit_mae_sgd, f4.tape_mae_sum_reduction, "diverged", "loss_scale"),
    ("huber_summed_by_hand", f4.fit_huber_default, f4.tape_huber_sum_over_batch_by_hand, "diverged", "loss_scale"),
    ("adagrad_accumulator_differs", f4.fit_adagrad, f4.tape_adagrad_accumulator_01, "diverged",
     "optimizer_mismatch"),
    ("eq_adamax_fit_vs_loop", f4.fit_adamax, f4.tape_adamax, "equivalent", None),
    ("nadam_for_adam", f4.fit_adam_lr_1e2, f4.tape_nadam_for_adam, "diverged", "optimizer_mismatch"),
    ("amsgrad_one_run", f4.fit_adam_lr_1e2, f4.tape_adam_amsgrad, "diverged", "optimizer_mismatch"),
    ("eq_lion_fit_vs_eager", f4.fit_lion, f4.tape_lion_eager, "equivalent", None),
    ("lion_beta_differs", f4.fit_lion, f4.tape_lion_beta_1_09, "diverged", "optimizer_mismatch"),
    ("ftrl_l1_one_run", f4.fit_ftrl, f4.tape_ftrl_no_l1, "diverged", "optimizer_mismatch"),
    ("eq_adamw_fit_vs_loop", f4.fit_adamw_decay_004, f4.tape_adamw_decay_004, "equivalent", None),
    ("adamw_decay_differs", f4.fit_adamw_decay_004, f4.tape_adamw_decay_01, "diverged", "optimizer_mismatch"),
    ("eq_cosine_warmup_fit_vs_loop", f4.fit_cosine_warmup, f4.tape_cosine_warmup, "equivalent", None),
    ("warmup_forgotten", f4.fit_cosine_warmup, f4.tape_constant_peak_rate, "diverged", "optimizer_mismatch"),
    ("eq_clipnorm_by_hand", f4.fit_sgd_clipnorm, f4.tape_clip_by_norm_by_hand, "equivalent", None),
    ("eq_global_clipnorm_by_hand", f4.fit_sgd_global_clipnorm, f4.tape_clip_by_global_norm_by_hand, "equivalent",
     None),
    ("eq_class_weight_as_sample_weight", f4.fit_class_weight_dict, f4.fit_class_weight_as_sample_weight,
     "equivalent", None),
    ("class_weight_by_label_position", f4.fit_class_weight_dict, f4.tape_class_weight_by_label_position,
     "diverged", "sample_weighting"),
    ("eq_train_step_with_metrics", f4.fit_dropout_net, f4.fit_train_step_with_metrics, "equivalent", None),
    ("train_step_no_training_flag", f4.fit_dropout_net, f4.fit_train_step_no_training_flag, "diverged",
     "training_mode_mismatch"),
    ("eq_steps_per_execution_dropout", f4.fit_dropout_net, f4.fit_dropout_net_steps_per_execution, "equivalent",
     None),
    ("eq_dataset_vs_numpy", f4.fit_bn_net_numpy, f4.fit_bn_net_dataset, "equivalent", None),
    ("eq_dataset_map_loop_vs_fit", f4.fit_bn_net_numpy, f4.tape_bn_net_dataset_map, "equivalent", None),
    ("batches_shuffled_whole", f4.fit_bn_net_numpy, f4.tape_bn_net_dataset_batch_then_shuffle, "not_comparable",
     "data_mismatch"),
    ("eq_activity_regularizer_added", f4.fit_activity_regularizer, f4.tape_activity_regularizer_added, "equivalent",
     None),
    ("activity_regularizer_left_out", f4.fit_activity_regularizer, f4.tape_activity_regularizer_left_out,
     "diverged", "regularization_mismatch"),
    ("eq_add_loss_added", f4.fit_add_loss, f4.tape_add_loss_added, "equivalent", None),
    ("add_loss_left_out", f4.fit_add_loss, f4.tape_add_loss_left_out, "diverged", "regularization_mismatch"),
    ("ema_overwrite_one_run", f4.fit_adam_lr_1e2, f4.fit_adam_ema_overwrite, "diverged", "optimizer_mismatch"),
    ("ema_one_run", f4.fit_adam_lr_1e2, f4.fit_adam_ema, "diverged", "optimizer_mismatch"),
    ("eq_causal_conv1d_fit_vs_jit_loop", f4.fit_causal_conv1d, f4.tape_causal_conv1d_jit, "equivalent", None),
    ("causal_vs_same_padding", f4.fit_causal_conv1d, f4.tape_same_padding_conv1d, "diverged",
     "layer_config_mismatch"),
    # the Dropout's seed generator draws from the global seed too: the layers after it start elsewhere
    ("dropout_layer_left_out", f4.fit_mlp_dropout, f4.tape_mlp_dropout_left_out, "not_comparable",
     "structure_mismatch"),
    ("eq_mixed_precision_fit_vs_scaled_loop", f4.fit_mixed_precision_mlp, f4.tape_mixed_precision_mlp_scaled,
     "equivalent", None),
]

# A fifth set (scripts_g.py): autoencoders (dense, convolutional with UpSampling2D, denoising), Conv1D +
# GRU, a two-input functional model, residual blocks with Add, self-attention, GroupNormalization,
# Reshape/Permute, Embedding + max pooling; KLDivergence, Poisson, CosineSimilarity, Hinge, focal loss,
# label smoothing; Adadelta, Adamax, Nadam, centered RMSprop, weight decay, staircase/cosine schedules.
CASES += [
    ("eq_autoencoder_fit_vs_loop", g5.fit_autoencoder, g5.tape_autoencoder, "equivalent", None),
    ("autoencoder_summed_over_pixels", g5.fit_autoencoder, g5.tape_autoencoder_summed_over_pixels, "diverged",
     "loss_scale"),
    ("eq_conv_autoencoder_dataset_map", g5.fit_conv_autoencoder_dataset, g5.tape_conv_autoencoder_dataset_map,
     "equivalent", None),
    ("denoising_no_training_flag", g5.fit_denoising, g5.tape_denoising_no_training_flag, "diverged",
     "training_mode_mismatch"),
    ("eq_conv_gru_fit_vs_eager", g5.fit_conv_gru, g5.tape_conv_gru_eager, "equivalent", None),
    ("clipvalue_vs_clipnorm", g5.fit_conv_gru, g5.tape_conv_gru_clipnorm, "diverged", "optimizer_mismatch"),
    ("eq_two_input_dict_vs_list", g5.fit_two_input_rmsprop_centered, g5.tape_two_input_rmsprop_centered,
     "equivalent", None),
    ("rmsprop_centered_one_run", g5.fit_two_input_rmsprop_centered, g5.tape_two_input_rmsprop_plain, "diverged",
     "optimizer_mismatch"),
    ("temperature_not_applied", g5.tape_two_input_temperature, g5.tape_two_input_temperature_not_applied,
     "diverged", "not_applied"),
    ("eq_residual_fit_vs_loop", g5.fit_residual, g5.tape_residual, "equivalent", None),
    ("residual_reg_losses_left_out", g5.fit_residual, g5.tape_residual_reg_losses_left_out, "diverged",
     "regularization_mismatch"),
    ("eq_row_attention_fit_vs_jit", g5.fit_row_attention, g5.tape_row_attention_jit, "equivalent", None),
    ("cosine_decay_steps_in_epochs", g5.fit_row_attention, g5.tape_row_attention_decay_steps_in_epochs,
     "diverged", "optimizer_mismatch"),
    ("sgd_weight_decay_one_run", g5.fit_groupnorm_weight_decay, g5.tape_groupnorm_no_weight_decay, "diverged",
     "optimizer_mismatch"),
    ("groupnorm_conv_frozen_one_run", g5.fit_groupnorm_weight_decay, g5.tape_groupnorm_weight_decay_conv_frozen,
     "diverged", "trainable_mismatch"),
    ("permute_left_out", g5.fit_columns_conv, g5.tape_columns_conv_permute_left_out, "diverged",
     "structure_mismatch"),
    ("eq_onehot_dataset_map_vs_sparse", g5.fit_text_max_pool, g5.tape_text_max_pool_onehot_dataset, "equivalent",
     None),
    ("staircase_one_run", g5.fit_text_max_pool, g5.tape_text_max_pool_smooth_decay, "diverged",
     "optimizer_mismatch"),
    ("eq_kl_divergence_by_hand", g5.fit_kl_divergence, g5.tape_kl_divergence_by_hand, "equivalent", None),
    ("kl_divergence_arguments_swapped", g5.fit_kl_divergence, g5.tape_kl_divergence_arguments_swapped,
     "diverged", "loss_mismatch"),
    ("poisson_flat_targets_broadcast", g5.fit_poisson, g5.tape_poisson_by_hand_flat_targets, "diverged",
     "shape_broadcast"),
    ("poisson_exposure_weights_forgotten", g5.fit_poisson_exposure_weights, g5.tape_poisson_exposure_weights_forgotten,
     "diverged", "sample_weighting"),
    ("cosine_similarity_sum_reduction", g5.fit_cosine_similarity, g5.tape_cosine_similarity_sum_reduction,
     "diverged", "loss_scale"),
    ("eq_hinge_by_hand", g5.fit_hinge, g5.tape_hinge_by_hand, "equivalent", None),
    ("hinge_labels_not_signed", g5.fit_hinge, g5.tape_hinge_by_hand_labels_not_signed, "diverged",
     "gradient_mismatch"),
    ("focal_from_logits_forgotten", g5.fit_focal, g5.tape_focal_from_logits_forgotten, "diverged", "loss_mismatch"),
    ("label_smoothing_lost_to_sparse", g5.fit_cce_smoothing_adadelta, g5.tape_sparse_ce_smoothing_lost_adadelta,
     "diverged", "loss_mismatch"),
    ("eq_cross_entropy_for_kl_divergence", g5.fit_kl_divergence, g5.tape_cross_entropy_for_kl_divergence,
     "equivalent", None),
    ("eq_poisson_full_log_likelihood", g5.fit_poisson, g5.tape_poisson_full_log_likelihood, "equivalent", None),
    ("adamw_exclusions_one_run", g5.fit_adamw_norms_excluded, g5.tape_adamw_norms_decayed, "diverged",
     "optimizer_mismatch"),
]

# A sixth set (scripts_h.py): CategoricalHinge, SquaredHinge, CategoricalFocalCrossentropy, multi-label
# sigmoid cross-entropy, Huber on a GRU; rates set by a schedule, a LearningRateScheduler callback or the
# loop; layers created in another order than called, TimeDistributed, Bidirectional merge modes,
# MultiHeadAttention's causal mask, MaxNorm, L1/L2 and bias regularizers; BatchNormalization with
# validation passes and train_on_batch; tf.data shuffles reshuffled each epoch or not.
CASES += [
    ("eq_categorical_hinge_by_hand", h6.fit_categorical_hinge, h6.tape_categorical_hinge_by_hand, "equivalent",
     None),
    ("squared_hinge_for_categorical_hinge", h6.fit_categorical_hinge, h6.tape_squared_hinge_for_categorical,
     "diverged", "loss_mismatch"),
    ("eq_focal_gamma0_alpha1_for_cce", h6.fit_iris_cce_logits, h6.tape_iris_focal_gamma0_alpha1, "equivalent",
     None),
    ("focal_defaults_for_cce", h6.fit_iris_cce_logits, h6.tape_iris_focal_defaults, "diverged", "loss_mismatch"),
    ("eq_multilabel_sigmoid_ce_by_hand", h6.fit_multilabel_bce, h6.tape_multilabel_sigmoid_ce_by_hand,
     "equivalent", None),
    ("multilabel_softmax_ce", h6.fit_multilabel_bce, h6.tape_multilabel_softmax_ce, "diverged", "loss_mismatch"),
    ("eq_piecewise_vs_lr_scheduler_callback", h6.fit_piecewise_per_epoch, h6.fit_lr_scheduler_callback,
     "equivalent", None),
    ("eq_piecewise_vs_rate_assigned_in_loop", h6.fit_piecewise_per_epoch, h6.tape_lr_assigned_per_step,
     "equivalent", None),
    ("lr_scheduler_callback_epoch_late", h6.fit_piecewise_per_epoch, h6.fit_lr_scheduler_callback_epoch_late,
     "diverged", "optimizer_mismatch"),
    ("rate_decayed_each_epoch_in_loop", h6.fit_lr_scheduler_callback, h6.tape_lr_assigned_decayed_each_epoch,
     "diverged", "optimizer_mismatch"),
    ("eq_exponential_decay_by_hand", h6.fit_exponential_decay, h6.tape_exponential_decay_by_hand, "equivalent",
     None),
    ("eq_layers_created_in_other_order", h6.fit_wine_functional, h6.tape_wine_head_first_subclass, "equivalent",
     None),
    ("eq_time_distributed_vs_dense_on_sequence", h6.fit_tagger_time_distributed, h6.tape_tagger_dense_on_sequence,
     "equivalent", None),
    ("bidirectional_merge_mode_differs", h6.fit_tagger_bidirectional_sum, h6.tape_tagger_bidirectional_ave,
     "diverged", "layer_config_mismatch"),
    ("eq_causal_attention_fit_vs_loop", h6.fit_next_row_causal, h6.tape_next_row_causal, "equivalent", None),
    ("causal_mask_forgotten", h6.fit_next_row_causal, h6.tape_next_row_mask_forgotten, "diverged",
     "call_argument_mismatch"),
    ("maxnorm_one_run", h6.fit_bc_plain, h6.fit_bc_maxnorm, "diverged", "layer_config_mismatch"),
    ("l1_for_l2", h6.fit_bc_l2, h6.fit_bc_l1, "diverged", "layer_config_mismatch"),
    ("bias_regularized_in_one_run", h6.fit_bc_l2, h6.tape_bc_l2_bias_regularized_too, "diverged",
     "layer_config_mismatch"),
    ("eq_bn_validation_fit_vs_loop", h6.fit_bn_validation_data, h6.tape_bn_validation_each_step, "equivalent",
     None),
    ("eq_bn_train_on_batch_vs_fit", h6.fit_bn_validation_data, h6.fit_bn_train_on_batch, "equivalent", None),
    ("eq_train_on_batch_class_weight_vs_fit", h6.fit_bc_class_weight, h6.fit_bc_train_on_batch_class_weight,
     "equivalent", None),
    ("eq_fixed_shuffle_vs_materialised_order", h6.tape_dataset_shuffled_once, h6.fit_dataset_order_materialised,
     "equivalent", None),
    # the same seed; one pipeline reshuffles each epoch: its order differs from the first epoch on
    # the same reshuffling pipeline in fit() and a loop: other iterators, other orders after epoch 1
    ("reshuffled_alike_fit_vs_loop", h6.fit_dataset_reshuffled_each_epoch, h6.tape_dataset_reshuffled_each_epoch,
     "not_comparable", "data_mismatch"),
    ("reshuffled_each_epoch", h6.tape_dataset_shuffled_once, h6.fit_dataset_reshuffled_each_epoch, "not_comparable",
     "data_mismatch"),
    ("eq_gru_huber_fit_vs_eager", h6.fit_gru_huber, h6.tape_gru_huber_eager, "equivalent", None),
    ("huber_delta_differs", h6.fit_gru_huber, h6.tape_gru_huber_delta_2, "diverged", "loss_mismatch"),
]

# A seventh set (scripts_i.py), longer runs (40-100 steps): a GRU tagger over a padding mask, a
# Transformer encoder block, two inputs and two outputs with loss_weights, a custom train_step with label
# smoothing, class_weight against weights looked up in a loop.
CASES += [
    # the loop's loss function gets no mask and averages over the padding too: no constant factor
    ("gru_tagger_mask_ignored", i7.fit_masked_gru_tagger, i7.tape_masked_gru_tagger_mask_ignored, "diverged",
     "gradient_mismatch"),
    ("eq_gru_tagger_mask_by_hand", i7.fit_masked_gru_tagger, i7.tape_masked_gru_tagger_mask_by_hand, "equivalent",
     None),
    # the padding mask given as sample_weight to a loss that applies it already: weights that change nothing
    ("eq_mask_as_sample_weight_too", i7.fit_masked_gru_tagger, i7.tape_masked_gru_tagger_mask_as_sample_weight,
     "equivalent", None),
    ("eq_encoder_block_fit_vs_loop", i7.fit_encoder_block, i7.tape_encoder_block, "equivalent", None),
    ("eq_two_inputs_two_outputs_loss_weights", i7.fit_two_inputs_two_outputs, i7.tape_two_inputs_two_outputs,
     "equivalent", None),
    ("two_outputs_losses_averaged", i7.fit_two_inputs_two_outputs, i7.tape_two_outputs_losses_averaged, "diverged",
     "loss_scale"),
    ("eq_custom_train_step_label_smoothing_by_hand", i7.fit_custom_train_step_label_smoothing,
     i7.tape_label_smoothing_by_hand, "equivalent", None),
    ("eq_class_weight_long", i7.fit_class_weight_long, i7.tape_class_weight_gathered, "equivalent", None),
    ("train_step_calls_loss_object", i7.fit_l2_classifier, i7.fit_train_step_calls_loss_object, "diverged",
     "regularization_mismatch"),
]

# An eighth set (scripts_j.py): mixed precision with a LossScaleOptimizer in a tape loop, a Lambda layer,
# gradients accumulated by hand, MirroredStrategy with one replica, a GAN.
CASES += [
    # scale_loss() in the tape, the gradients applied by the wrapped optimizer: nothing divides them back
    ("mixed_scaled_loss_inner_adam_applies", j8.fit_mixed_precision_adam,
     j8.tape_mixed_scaled_loss_inner_optimizer_applies, "diverged", "loss_scaling"),
    ("mixed_scaled_loss_inner_sgd_applies", f4.fit_mixed_precision_mlp, j8.tape_mixed_scaled_loss_inner_sgd_applies,
     "diverged", "loss_scaling"),
    ("eq_mixed_precision_adam_fit_vs_scale_loss", j8.fit_mixed_precision_adam, j8.tape_mixed_scaled_loss_adam,
     "equivalent", None),
    # a Lambda layer's function is compared by what its code computes, not by the file and lines it is in
    ("eq_same_lambda_written_twice", j8.fit_lambda_halves, j8.tape_lambda_halves, "equivalent", None),
    ("lambda_other_constant", j8.fit_lambda_halves, j8.tape_lambda_quarters, "diverged", "layer_config_mismatch"),
    # micro-batch gradients summed, not averaged: the same loss, a factor on the gradients alone (3, which
    # is also the number of outputs, but a mean over outputs would show in the loss)
    ("micro_batches_summed_not_averaged", j8.tape_micro_batches_averaged, j8.tape_micro_batches_summed, "diverged",
     "gradient_scale"),
    ("eq_mirrored_one_replica_fit_vs_strategy_run", j8.fit_mirrored_one_replica, j8.tape_mirrored_strategy_run,
     "equivalent", None),
    ("eq_gan_two_tapes_vs_persistent_tape", j8.gan_two_tapes_function, j8.gan_persistent_tape_eager, "equivalent",
     None),
]

# A ninth set (scripts_k.py): fit(validation_split=...) against a loop over all the data, clipping per
# variable by hand against an optimizer's global clipping, compute_average_loss with another global batch.
CASES += [
    # fit() trains on the first 80%: the loop's extra steps are on the held-out examples, or its
    # batches part from fit()'s where fit()'s epoch ends on a partial batch
    ("validation_split_loop_extra_steps", k9.fit_validation_split_one_epoch, k9.tape_all_data_one_epoch, "diverged",
     "validation_split_mismatch"),
    ("validation_split_loop_two_epochs", k9.fit_validation_split_fifth, k9.tape_all_data_two_epochs, "diverged",
     "validation_split_mismatch"),
    ("eq_validation_split_vs_loop_on_first_80", k9.fit_validation_split_fifth, k9.tape_first_fifth_held_out_two_epochs,
     "equivalent", None),
    # clipping by hand in the loop, the other way in the optimizer: the recorded (pre-clip) gradients
    # of the optimizer's run against the loop's capped ones name the run that clips by hand and how
    ("clip_by_norm_by_hand_vs_global_clipnorm", k9.fit_global_clipnorm, k9.tape_clip_by_norm_each, "diverged",
     "gradient_scale"),
    ("clip_by_global_norm_by_hand_vs_clipnorm", k9.fit_clipnorm, k9.tape_clip_by_global_norm, "diverged",
     "gradient_scale"),
    ("eq_clip_by_norm_by_hand_vs_clipnorm", k9.fit_clipnorm, k9.tape_clip_by_norm_each, "equivalent", None),
    # compute_average_loss(per_example_loss, global_batch_size=2 x the batch): the divisor measured from the
    # recorded per-example losses, under a one-replica MirroredStrategy and without a strategy
    ("average_loss_global_batch_doubled_mirrored", k9.fit_mirrored_sgd, k9.tape_mirrored_global_batch_doubled,
     "diverged", "loss_scale"),
    ("average_loss_global_batch_doubled_no_strategy", k9.fit_mirrored_sgd,
     k9.tape_average_loss_no_strategy_global_batch_doubled, "diverged", "loss_scale"),
    # a padding mask that pads nothing in the first batch: the losses part at the first padded batch,
    # where the mask's valid entries and the loop's mean over all are read
    ("mask_ignored_from_first_padded_batch", k9.fit_masked_tagger_full_first_batch,
     k9.tape_masked_tagger_full_first_batch_mask_ignored, "diverged", "gradient_mismatch"),
    # a mean teacher (a clone of the student, no optimizer) makes its targets in training mode in one run,
    # in inference mode in the other: the teacher's layers are named, the student's run alike, and the
    # consistency term it feeds is not taken for a regularizer of another factor
    ("mean_teacher_targets_in_training_mode_in_one_run", l10.tape_mean_teacher_ema,
     l10.tape_mean_teacher_in_inference_mode, "diverged", "training_mode_mismatch"),
    # an Embedding's IndexedSlices gradient clipped by tf.clip_by_global_norm as global_clipnorm does;
    # each gradient clipped on its own instead: only the update of the step past the global norm parts
    ("eq_global_clipnorm_sparse_by_hand", g5.fit_text_max_pool_global_clipnorm,
     g5.tape_text_max_pool_clip_by_global_norm, "equivalent", None),
    ("global_clipnorm_as_each_norm", g5.fit_text_max_pool_global_clipnorm, g5.tape_text_max_pool_clip_each_norm,
     "diverged", "optimizer_mismatch"),
    # a penalty differentiated apart from the loss: its gradients added to the applied ones (the same
    # training as fit()'s one loss function), or computed and dropped
    ("eq_second_loss_gradients_added", l10.fit_digits_ce_plus_output_penalty, l10.tape_two_losses_gradients_added,
     "equivalent", None),
    # a last, partial batch of 26 per epoch: the loop's mean agrees with fit() on it; a sum divided by
    # the full batch of 32 (compute_average_loss with global_batch_size) parts there, by 26/32
    ("eq_partial_batch_mean_fit_vs_loop", m.fit_digits_partial_last_batch, l10.tape_digits_partial_batch_mean,
     "equivalent", None),
    ("partial_batch_fixed_divisor", m.fit_digits_partial_last_batch, l10.tape_digits_partial_batch_fixed_divisor,
     "diverged", "loss_scale"),
    # the trained weights clipped by hand after every update in one run (assign in the step function):
    # the step after the first clip parts; a clip no weight reaches changes nothing (context)
    ("weights_clipped_by_hand_one_run", m.fit_digits_adam_eps, l10.tape_digits_weights_clipped, "diverged",
     "weights_assigned"),
    ("eq_weights_clip_never_reached", m.fit_digits_adam_eps, l10.tape_digits_weights_clip_never_reached,
     "equivalent", None),
    # both runs clip by hand: with another value the writes are the cause (the recorded updates precede
    # them and agree); values no weight reaches are context; another set of variables clipped is the cause
    ("both_clip_other_value", l10.tape_digits_weights_clipped, l10.tape_digits_weights_clipped_wider,
     "diverged", "weights_assigned"),
    ("eq_both_clip_never_reached", l10.tape_digits_weights_clip_never_reached, l10.tape_digits_weights_clip_at_50,
     "equivalent", None),
    ("clip_other_variables", l10.tape_digits_weights_clipped, l10.tape_digits_first_kernel_clipped,
     "diverged", "weights_assigned"),
    # the same writes in both runs from other starting weights: the steps are not compared, so the
    # writes cannot be judged (context, not a cause)
    ("both_clip_not_comparable", l10.tape_digits_weights_clipped_other_seed, l10.tape_digits_weights_clipped,
     "not_comparable", None),
    # clipped at the top of an eager step: the writes precede step 0, and the start they change is theirs
    ("weights_clipped_before_step0", m.fit_digits_adam_eps, l10.tape_digits_weights_clipped_at_the_top_eagerly,
     "diverged", "weights_assigned"),
    # fit()'s kernel_constraint against the same projection assigned by hand after each update: the
    # recorded updates differ (Keras projects inside the update), the weights every step starts from
    # do not; another max value by hand parts from step 1
    ("eq_maxnorm_constraint_vs_projection_by_hand", m.fit_digits_maxnorm, l10.tape_digits_maxnorm_by_hand,
     "equivalent", None),
    ("maxnorm_by_hand_other_value", m.fit_digits_maxnorm, l10.tape_digits_maxnorm_by_hand_other_value,
     "diverged", "layer_config_mismatch"),
    # the loop repeats its dataset before batching it: its batches run across the epoch boundary where
    # fit() ends each epoch with a partial batch
    ("batched_across_epochs", m.fit_digits_partial_last_batch, l10.tape_digits_repeat_then_batch, "diverged",
     "data_mismatch"),
    ("second_loss_gradients_dropped", l10.fit_digits_ce_plus_output_penalty,
     l10.tape_second_loss_gradients_dropped, "diverged", "discarded_gradient"),
    # two micro-batches of 16 per apply by hand against fit()'s batches of 32: each step records its
    # last micro-batch, so the batches cannot be matched; the finding says how such a loop looks, and
    # the first update (same weights, same examples) is twice fit()'s: the gradients summed, not averaged
    ("micro_batches_by_hand", s.fit_digits_sgd_sparse, l10.tape_digits_two_micro_batches_summed,
     "diverged", "gradient_scale"),
    # the same micro-batches averaged: every update agrees with fit()'s, the same training
    ("micro_batches_averaged_by_hand", s.fit_digits_sgd_sparse, o13.tape_digits_two_micro_batches_averaged,
     "equivalent", "data_mismatch"),
    # a loss function of the script's own that sums: the measured factor first, the class names after it
    ("own_loss_function_sums", o13.fit_regression_mse_string, o13.fit_regression_own_summed_squares, "diverged",
     "loss_scale"),
    # fit() on dicts keyed by name, a loop on a list in the model's order and one loss per head
    ("eq_dict_inputs_against_list", o13.fit_feat_aux_dicts, o13.tape_feat_aux_lists, "equivalent", None),
    ("next_iter_every_step", s.fit_digits_sgd_sparse, o13.tape_digits_next_iter_every_step, "diverged",
     "repeated_step"),
    ("eq_pipeline_iterator_kept", s.fit_digits_sgd_sparse, o13.tape_digits_pipeline_iterator_kept, "equivalent", None),
]

STEPS_ACCUMULATED = s.STEPS  # updates of the accumulating run: 2 x STEPS micro-batch steps

# The factor a regularization_mismatch must measure (run b's added term over run a's).
REG_FACTORS = {"l2_forgotten": 0.0, "l2_by_hand_other_factor": 0.5, "reg_losses_added_twice": 2.0,
               "l2_factor_differs": 0.1, "l2_by_hand_on_unregularized_model": 0.5}

# What a loss_scale finding must name as the factor's meaning (its evidence's ``matches``).
MATCHES = {
    "seed002_mse_vs_sum_sgd": "the number of outputs",
    "seed002_mse_vs_sum_adam": "the number of outputs",
    "per_sample_loss_vector": "the batch size",
    "weighted_mean_by_hand": "batch/sum(sample weights)",
    "weighted_mean_by_hand_none_reduction": "batch/sum(sample weights)",
    "mask_mean_over_all": "the mask's valid fraction",
    "loss_function_summed": "the batch size",
    "mse_sum_reduction": "the batch size",
    "mean_over_batch_then_sum_over_outputs": "the number of outputs",
    "two_outputs_losses_averaged": "the number of the model's outputs (2",
    "average_loss_global_batch_doubled_mirrored": "a divisor of 64 for a batch of 32",
    "average_loss_global_batch_doubled_no_strategy": "a divisor of 64 for a batch of 32",
    "partial_batch_fixed_divisor": "a fixed divisor of 32 for a batch of 26",
}

# Cases the comparator cannot decide yet because the tracer does not record what it needs (the reason
# names the missing data); strict, so the case fails loudly once the tracer records it.
XFAIL: dict[str, str] = {}


@pytest.mark.slow
@pytest.mark.parametrize("case", [pytest.param(c, marks=pytest.mark.xfail(strict=True, reason=XFAIL[c[0]]))
                                  if c[0] in XFAIL else c for c in CASES], ids=[c[0] for c in CASES])
def test_case(traced, case):
    from gradtrace.compare import compare, render_text

    _id, fa, fb, verdict, top = case
    a, b = traced.run(fa), traced.run(fb)
    store = traced.store()
    try:
        report = compare(store, a, b, project="cases")
    finally:
        store.close()
    text = render_text(report, verbose=True)
    assert report.verdict == verdict, text
    if top is not None:
        assert report.findings and report.findings[0].kind == top, text
    if verdict == "equivalent":
        assert all(f.severity == "info" for f in report.findings), text
    if _id in ("hand_written_other_rate", "module_by_hand_other_rate"):  # the rates measured, in the fix
        said = (("learning_rate=0.05", "assign_sub(0.1 * g)") if _id == "hand_written_other_rate" else
                ("assign_sub(0.1 * g)", "assign_sub(0.02 * g)"))
        assert all(x in (report.findings[0].fix or "") for x in said), text
    if _id == "scale_loss_called_result_unused":  # the loop's run named, as calling scale_loss to no effect
        f = report.findings[0]
        assert f.evidence["run"] == "b" and f.evidence["called_unused"] and f.severity == "error", text
        assert all(g.severity == "info" for g in report.findings if g.kind == "gradient_scale"), text
    if _id == "tf_keras_dropout_retraced_for_partial_batch":  # random draws, at the first partial batch: a warning
        f = report.findings[0]
        assert f.severity == "warning" and f.steps == [s.STEPS], text
        assert f.evidence["batch_size_changes"] == {"from": s.BATCH, "to": 5} and "traced again" in f.summary, text
    if _id == "step_called_again_on_some_batches":  # the three repeated batches, in run b's steps
        ev = report.findings[0].evidence
        assert ev["run"] == "b" and ev["occasional"] and ev["steps"] == [1, 5, 9], text
    if _id == "gan_generator_step_moves_discriminator":  # the discriminator's variables, at the generator's step
        ev = report.findings[0].evidence
        assert ev["run"] == "b" and ev["step"] == 1 and (ev["updated"], ev["updated_other"]) == (8, 4), text
        assert all(f.kind != "optimizer_mismatch" for f in report.findings), text
    if _id == "label_smoothing_beside_sparse":  # the argument, not only the class
        f = report.findings[0]
        assert f.evidence["differences (a, b)"]["label_smoothing"] == (0.1, None), text
        assert "label_smoothing=0.1" in f.summary and "label_smoothing: 0.1 vs None" in (f.fix or ""), text
    if _id.startswith("tf_keras_frozen_after_compile"):  # names the run whose freeze did not take, and how to mend it
        f = report.findings[0]
        assert f.evidence.get("frozen_late_in") == "a" and "compile()" in (f.fix or ""), text
    if _id == "state_advanced_outside_the_steps":  # the state layer named as the reason the steps part
        f = report.findings[0]
        assert f.severity == "error" and f.evidence.get("state_layers") and "start from other state" in f.summary, text
    if _id == "frozen_base_against_head_only":  # neither run trains the base's weights: that is context
        assert [f.severity for f in report.findings if f.kind == "trainable_mismatch"] == ["info"], text
    if _id in ("relu_as_activation_layer", "max_norm_never_binds", "l2_by_compute_loss"):  # named, as context
        assert any(f.kind == "layer_config_mismatch" for f in report.findings), text
    if _id == "hand_written_against_adam":  # the rule measured is worded once, by the cause; step 0 its effect
        f = report.findings[0]
        assert f.summary.split(" Its effect: ", 1)[1].endswith("the optimizers act differently."), text
        assert f.evidence["step_evidence"][0]["summary"].endswith("act differently."), text
    assert not any("symptom" in f.evidence for f in report.findings), text  # the engine's, not the user's
    if _id == "gan_generator_rate_by_hand_wrong":  # the generator's rates, not the discriminator's
        assert "optimizer 2: Make the two updates the same: give the SGD `learning_rate=0.1`" in report.findings[0].fix
    if _id == "clipnorm_left_out_by_hand":  # the setting the hand-written update leaves out, and how
        assert "clipnorm=0.5" in report.findings[0].fix and "tf.clip_by_norm" in report.findings[0].fix, text
    if _id == "schedule_by_hand_staircase":  # both rates step by step
        assert "0.1, 0.09, 0.081" in report.findings[0].fix and "0.1, 0.1, 0.1" in report.findings[0].fix, text
    if _id == "accuracy_per_label_encoding":  # named, as context: each metric fits its labels
        assert any(f.kind == "metric_mismatch" and f.severity == "info" for f in report.findings), text
    if _id == "metric_does_not_fit_labels":  # names the run whose metric does not fit
        assert report.findings[0].evidence.get("run") == "b", text
    if _id == "inputs_scaled_by_16":  # the factor itself, measured from the fingerprints
        ev = report.findings[0].evidence
        assert abs(ev["factor"] - 16.0) < 1e-4 and ev["offset"] == 0.0 and ev["labels_equal"], text
    if _id == "inputs_normalised_differently":  # an offset too
        assert report.findings[0].evidence["offset"] != 0.0, text
    if _id in ("applied_twice_per_batch", "train_step_called_twice"):  # the run and the count
        ev = report.findings[0].evidence
        assert ev["run"] == "b" and ev["per_batch"] == 2 and ev["per_batch_other"] == 1, text
    if _id in REG_FACTORS:
        assert abs(report.findings[0].evidence["factor"] - REG_FACTORS[_id]) < 1e-3, text
    if _id == "global_clipnorm_as_each_norm":  # parts where fit()'s global norm first passes 0.3, by its update
        store = traced.store()
        try:
            steps, norms = store.series(report.a["id"], "grad_norm")
        finally:
            store.close()
        assert report.first_divergent_step == int(steps[np.flatnonzero(norms > 0.3)[0]]), text
        assert "apply different updates" in report.findings[0].summary, text
    if _id == "dataset_shuffled_in_one_loop":  # names the pipeline that shuffles, and its seed
        f = report.findings[0]
        assert list(f.evidence.get("dataset_shuffle") or {}) == ["b"], text
        assert "Run b's tf.data pipeline shuffles" in f.summary and "run a's does not" in f.summary, text
    if _id == "fit_shuffles_by_default":  # names fit()'s default as the cause
        assert report.findings[0].evidence.get("fit_shuffle") == ["b"], text
    if _id == "loss_weights_forgotten":  # the finding names the weights it found
        assert report.findings[0].evidence.get("loss_weights_a") == [1.0, 0.2], text
        # measured from the step-0 totals and the last output's own Keras loss: added unweighted
        assert report.findings[0].evidence.get("last_output_weight_b") == 1.0, text
    if _id in MATCHES:
        assert str(report.findings[0].evidence.get("matches") or "").startswith(MATCHES[_id]), text
    if _id == "mean_teacher_targets_in_training_mode_in_one_run":  # the teacher's layers, not the student's
        f = report.findings[0]
        assert "of a model no optimizer of the runs trains" in f.summary and "teacher(x," in (f.fix or ""), text
        assert f.evidence["inference_run"] == "b" and len(f.layers) == 2, text
        assert not any(g.kind == "training_outside_steps" for g in report.findings), text  # the same calls
        assert all(g.severity != "error" for g in report.findings[1:]), text  # the added term is no factor
    if _id == "dataset_weights_forgotten":  # the fix says where fit()'s weights came from
        assert "third element of (x, y, w) batches" in (report.findings[0].fix or ""), text
        # recorded by the tracer, not inferred: fit() saw (x, y, w) batches
        assert report.findings[0].evidence["a"].get("sample_weight") == "from its (x, y, w) batches", text
    if _id == "class_weight_one_run":
        assert "fit(class_weight=...)" in (report.findings[0].fix or ""), text
    if _id.startswith("weighted_mean_by_hand"):  # both weight: the fix is the count, not reduction='none'
        assert "divide the weighted sum by the number of samples" in (report.findings[0].fix or ""), text
        assert not any(f.kind == "sample_weighting" for f in report.findings), text
    if _id == "standard_scaler_one_run":  # per feature: no factor, the inputs' moments as evidence
        ev = report.findings[0].evidence
        assert ev["per_feature"] and ev["factor"] is None and ev["input_rms"]["b"] > 10 * ev["input_rms"]["a"], text
        assert "StandardScaler" in report.findings[0].summary and "fit the scaler once" in report.findings[0].fix
    if _id == "adamw_vs_l2_in_loss":  # one finding names both mechanisms
        f = report.findings[0]
        assert f.evidence["regularized_run"] == "b" and f.evidence["weight_decay_run"] == "a", text
        assert "weight_decay=0.01" in f.summary and "weight_decay=0.01 in both" in (f.fix or ""), text
    if _id == "target_standardised_one_run":  # the map measured: (y - mean) / std of the targets
        ev = report.findings[0].evidence
        assert abs(1 / ev["factor"] - 77.0) < 2 and abs(-ev["offset"] / ev["factor"] - 152.0) < 3, text
    if _id == "class_indices_shifted":
        ev = report.findings[0].evidence
        assert abs(ev["factor"] - 1) < 1e-4 and abs(ev["offset"] - 1) < 1e-4, text
        assert "subtract 1 from run b's labels" in (report.findings[0].fix or ""), text
    if _id == "accumulated_sum_not_averaged":  # measured on the updates: the loop applies twice the mean
        f = report.findings[0]
        assert abs(f.evidence["update_ratio_loop_over_optimizer"] - 2.0) < 1e-3, text
        assert "Divide the accumulated gradients by 2" in (f.fix or ""), text
    if _id.startswith("eq_accumulation"):  # the runs are aligned update by update, not left unaligned
        assert report.aligned_steps == STEPS_ACCUMULATED, text
    if _id == "train_step_drops_sample_weights":  # the run that drops them, and where to pass them
        f = report.findings[0]
        assert f.evidence["dropped_in"] == "b" and "sample_weight=sample_weight" in (f.fix or ""), text
    if _id == "label_smoothing_vs_hand_loss":  # the Keras loss's smoothing named for the hand-written one
        f = report.findings[0]
        assert f.evidence["keras_loss"]["run"] == "a" and "label_smoothing=0.2" in (f.fix or ""), text
    if _id == "lr_callback_one_run":  # the callback named, from the first step of the second epoch
        f = report.findings[0]
        assert f.evidence["differences (a, b)"]["learning_rate_callbacks"] == [["LearningRateScheduler"], None], text
        assert "LearningRateScheduler" in (f.fix or "") and "step 4" in (f.fix or ""), text
    if _id == "micro_batches_summed_not_averaged":  # the factor, not a loss reduction it cannot be
        f = report.findings[0]
        assert abs(f.evidence["factor"] - 1 / 3) < 1e-4 and not f.evidence.get("matches"), text
        assert "micro-batches" in f.summary, text
    if _id.startswith("mixed_scaled_loss_inner_"):  # the run whose gradients stay scaled, and the wrapper's apply
        f = report.findings[0]
        assert f.evidence.get("scaled_gradients_run") == "b" and f.evidence.get("loss_scale") == 32768.0, text
        assert "inner_optimizer" in (f.fix or ""), text
    if _id == "loss_scale_optimizer_unscaled_loss":  # the run, the factor, and scale_loss as the fix
        f = report.findings[0]
        assert f.evidence["unscaled_loss_run"] == "b" and abs(f.evidence["gradient_factor"] - 32768) < 1, text
        assert "scale_loss(loss)" in (f.fix or "") and not any(g.kind == "gradient_scale" for g in report.findings)
    if _id == "metric_forward_redraws_dropout":  # the second forward pass counted, the departure at step 1 its evidence
        f = report.findings[0]
        assert f.severity == "error" and f.steps == [1] and report.first_divergent_step == 1, text
        assert list(f.evidence["b"].values()) == [s.STEPS] and f.evidence["random_layers"], text
        assert "a forward pass for a metric after the tape" in f.summary, text
        assert "compute metrics from that pass's output" in (f.fix or ""), text
    if _id == "eq_dropout_keras3_vs_tf_keras":  # says why nothing was compared step by step
        assert "different generators in keras3 and tf_keras" in str(report.to_dict()["skipped"]), text
    if _id == "targets_standardised_per_column":  # no single map: the labels' moments as evidence
        ev = report.findings[0].evidence
        assert ev["per_column"] and ev["factor"] is None and ev["label_rms"]["a"] > 100 * ev["label_rms"]["b"], text
    if _id == "eq_gru_no_dropout_no_training_flag":  # the mode difference named, as context, measured
        f = next(f for f in report.findings if f.kind == "training_mode_mismatch")
        assert f.evidence["inference_run"] == "b" and f.evidence["same_steps"] == 8, text
    if _id == "eq_sum_reduction_rate_divided":  # the factor named as context, the updates equal
        f = next(f for f in report.findings if f.kind == "loss_scale")
        assert abs(f.evidence["same_updates"]["loss_factor"] - 16) < 1e-3, text
        assert "absorbs" not in f.summary and "compensates the factor" in f.summary, text
    if _id == "wine_loss_weights_swapped":  # run b's weights measured from its heads' gradients
        f = report.findings[0]
        assert f.evidence["loss_weights_a"] == [1.0, 0.3], text
        assert f.evidence["loss_weights_b_measured"] == [0.3, 1.0], text
        assert "by [1.0, 0.3]" in (f.fix or ""), text
    if _id == "schedule_per_step_vs_per_epoch":  # what each rate did, from the recorded rates
        f = report.findings[0]
        assert f.evidence["differences (a, b)"]["learning_rate_schedule"][1].startswith("set during training"), text
        assert "changes every 4 steps" in (f.fix or "") and "decay_steps=4" in (f.fix or ""), text
    if _id == "applies_every_other_batch":  # the run, the stride, the other run's steps it trains on
        f = report.findings[0]
        assert (f.evidence["run"], f.evidence["stride"], f.evidence["offset"]) == ("b", 2, 0), text
        assert f.evidence["steps_other"] == [0, 2, 4, 6] and report.first_divergent_step == 1, text
    if _id == "batch_size_differs":
        assert report.findings[0].evidence["batch_sizes"] == [32, 64], text
        assert "micro-batches" not in report.findings[0].summary, text
    if _id == "micro_batches_by_hand":
        assert report.findings[0].evidence["update_ratio"] == pytest.approx(2.0, rel=1e-4), text
        (f,) = [f for f in report.findings if f.kind == "data_mismatch"]
        assert f.evidence["batch_sizes"] == [32, 16], text
        assert "accumulates 2 micro-batches of 16 by hand" in f.summary, text
        assert "gradient_accumulation_steps=2" in (f.fix or ""), text
    if _id == "micro_batches_averaged_by_hand":  # the updates decide, and say so
        f = report.findings[0]
        assert f.evidence["same_updates"]["steps_compared"] >= 4 and "applies the mean of its 2" in f.summary, text
    if _id == "mixed_precision_policy_one_run":  # the policy, not an unscaled float16 gradient
        f = report.findings[0]
        assert "mixed_float16" in f.summary and "underflow" not in f.summary, text
        assert "set_global_policy('mixed_float16')" in (f.fix or ""), text
    if _id == "adam_epsilon_differs":
        assert report.findings[0].evidence["differences (a, b)"] == {"epsilon": [1e-07, 1e-08]}, text
    if _id == "bn_statistics_moved_by_metric_forward":  # departs at step 1 (the extra pass follows step 0's apply)
        f = report.findings[0]
        assert f.evidence["state_departs"]["step"] == 1 and report.aligned_steps == 8, text
        assert f.evidence["b"] and not f.evidence.get("a"), text  # run b's extra calls
    if _id == "gru_tagger_mask_ignored":  # names the mask run a's Keras loss honoured, and how to apply it
        f = report.findings[0]
        assert f.evidence["masked_run"] == "a" and f.evidence["unmasked_mean_over_all_entries"], text
        assert f.steps == [0] and "tf.reduce_sum(loss * mask) / tf.reduce_sum(mask)" in (f.fix or ""), text
    if _id == "train_step_calls_loss_object":  # the fix says what a custom train_step calls instead
        assert "self.compute_loss(x=x, y=y, y_pred=y_pred)" in (report.findings[0].fix or ""), text
    if _id == "eq_mask_as_sample_weight_too":  # the weights named, as context
        assert any(f.kind == "sample_weighting" and f.severity == "info" for f in report.findings), text
    if _id == "partial_last_batch_dropped":  # the batch left out, its size, and where the runs part
        f = report.findings[0]
        assert f.evidence["skipped_steps"] == [7, 15] and f.evidence["skipped_batch_sizes"] == [26], text
        assert "leaves 2 of them out" in f.summary, text  # both epochs' partial batches (16 vs 14 steps)
        assert "drop_remainder=False" in (f.fix or "") and report.first_divergent_step == 7, text
    if _id == "partial_batch_fixed_divisor":  # the run, the divisor and the partial batch it parts at
        f = report.findings[0]
        assert report.first_divergent_step == 7 and f.steps == [7], text
        assert (f.evidence["fixed_divisor_run"], f.evidence["divisor"], f.evidence["batch"]) == ("b", 32, 26), text
        assert abs(f.evidence["loss_b"] / f.evidence["loss_a"] - 26 / 32) < 1e-4, text
    if _id == "weights_clipped_by_hand_one_run":  # the run, where, and the departure folded into it
        f = report.findings[0]
        assert f.evidence["assigned_run"] == "b" and f.evidence["where"] == "step_function", text
        assert f.steps[0] == 1 and report.first_divergent_step == 1 and f.evidence["step_evidence"], text
    if _id == "eq_weights_clip_never_reached":  # said, as context
        f = next(f for f in report.findings if f.kind == "weights_assigned")
        assert f.severity == "info" and "made no difference here" in f.summary, text
    if _id == "both_clip_other_value":  # both runs named, the departure folded into the writes
        f = report.findings[0]
        assert f.evidence["both_runs"] and not f.evidence.get("only_in_a") and not f.evidence.get("only_in_b"), text
        assert f.steps[0] == 1 and report.first_divergent_step == 1 and f.evidence["step_evidence"], text
    if _id == "eq_both_clip_never_reached":  # said, as context
        f = next(f for f in report.findings if f.kind == "weights_assigned")
        assert f.severity == "info" and "leave the same weights in both runs" in f.summary, text
    if _id == "both_clip_not_comparable":  # said, as context
        f = next(f for f in report.findings if f.kind == "weights_assigned")
        assert f.severity == "info" and "not compared one by one" in f.summary, text
    if _id == "weights_clipped_before_step0":  # dated at step 0; the different start said as their context
        f = report.findings[0]
        assert f.evidence["first_step"] == 0 and f.evidence["where"] == "eager", text
        assert f.evidence["start_differs_where_written"] >= 1, text
        init = next(g for g in report.findings if g.kind == "init_mismatch")
        assert init.severity == "info" and "before step 0" in init.summary, text
    if _id == "clip_other_variables":  # the variables run a writes and run b does not, paired by structure
        f = report.findings[0]
        assert f.evidence["assigned_run"] == "a" and not f.evidence["only_in_b"], text
        only = f.evidence["only_in_a"]  # the second layer's kernel and both biases
        assert len(only) == 3 and sum(n.endswith("/bias") for n in only) == 2, text
    if _id == "eq_maxnorm_constraint_vs_projection_by_hand":  # both said, as context
        kinds = {f.kind: f.severity for f in report.findings}
        assert kinds.get("weights_assigned") == "info" and kinds.get("layer_config_mismatch") == "info", text
    if _id == "batched_across_epochs":  # the partial batch, the run that has it, and the fix
        f = report.findings[0]
        assert f.severity == "warning" and f.steps == [7], text
        across = f.evidence["batched_across_epochs"]
        assert (across["partial_run"], across["partial_batch"], across["full_batch"]) == ("a", 26, 32), text
        assert "ds.batch(32).repeat(n)" in (f.fix or ""), text
    if _id == "eq_two_losses_differentiated_separately":  # the step's loss is both calls' sum, as fit()'s total
        assert not any(f.kind == "gradient_mismatch" for f in report.findings), text
    if _id == "eq_adam_vs_adamw_without_decay":  # the class difference named, as context
        f = next(f for f in report.findings if f.kind == "optimizer_mismatch")
        assert f.evidence["differences (a, b)"] == {"class": ["Adam", "AdamW"]} and "no difference here" in f.summary
    if _id == "schedule_one_step_early":  # the shift measured on the recorded rates, the counter named
        f = report.findings[0]
        assert f.evidence["differences (a, b)"]["learning_rate_shift"] == 1 and report.first_divergent_step == 3, text
        assert "step + 1" in (f.fix or "") and "changes once" in (f.fix or ""), text
    if _id == "model_built_each_epoch":  # the run, the step, the optimizer starting over too
        f = report.findings[0]
        assert (f.evidence["run"], f.evidence["step"], f.evidence["optimizer_restarts"]) == ("b", 4, True), text
        assert len(f.evidence["new_variables"]) == 4 and report.first_divergent_step == 4, text
    if _id == "conv1d_nesterov_one_run":
        assert report.findings[0].evidence["differences (a, b)"] == {"nesterov": [False, True]}, text
    if _id == "loss_function_summed":  # the script reduces a loss function's output: no reduction= to change
        fix = report.findings[0].fix or ""
        assert "reduce the per-sample losses to their mean" in fix and "reduction=" not in fix, text
    if _id == "accumulator_never_reset":  # the step where the applied gradient is not the loss's
        f = report.findings[0]
        assert f.steps == [1] and f.evidence.get("same_loss_other_gradient"), text
        assert "accumulator not reset" in f.summary and "acc.assign(tf.zeros_like(acc))" in (f.fix or ""), text
    if _id == "hand_written_loss_counts_padding":
        f = report.findings[0]
        assert f.evidence["keras_loss_mask"]["valid"] < f.evidence["keras_loss_mask"]["total"], text
        assert "tf.reduce_sum(loss * mask) / tf.reduce_sum(mask)" in (f.fix or ""), text
    if _id == "initializers_differ":
        f = report.findings[0]
        diff = f.evidence["initializers_differ"]
        assert len(diff) == 1 and diff[0]["a"].startswith("GlorotUniform") and diff[0]["b"].startswith("HeNormal"), text
        assert "same initializers" in (f.fix or ""), text
    if _id == "weights_lost_moving_to_a_dataset":
        assert "from_tensor_slices((x, y, w))" in (report.findings[0].fix or ""), text
    if _id == "cosine_minimised_by_hand":  # the run without a Keras loss is the one to fix
        f = report.findings[0]
        assert f.evidence["run"] == "b" and "Keras CosineSimilarity" in (f.fix or ""), text
    if _id == "eq_logits_against_sigmoid_probabilities":  # no run to change
        f = report.findings[0]
        assert f.evidence["logits_against_probabilities"] == "a" and "Both are right" in f.summary, text
        assert "from_logits_on_activation" not in f.evidence and "Nothing to fix" in (f.fix or ""), text
    if _id.startswith("eq_") and _id.endswith("_from_logits_true"):  # the run to change, and why it agrees
        f = report.findings[0]
        assert f.evidence["from_logits_on_activation"] == "b" and "from_logits=False` in run b" in (f.fix or ""), text
    if _id == "adam_string_default_lr":  # two constant rates: the rate, not a schedule
        f = report.findings[0]
        assert set(f.evidence["differences (a, b)"]) == {"learning_rate", "learning_rate_in_effect"}, text
        assert "same learning rate (run a 0.001, run b 0.01" in (f.fix or ""), text
    if _id == "label_smoothing_one_run":
        assert {k: list(v) for k, v in report.findings[0].evidence["differences (a, b)"].items()} == {
            "label_smoothing": [0.0, 0.1]}, text
    if _id == "other_seed_same_data":  # says so, and invents no cause
        assert [f.kind for f in report.findings if f.severity != "info"] == ["init_mismatch"], text
    if _id in ("validation_split_loop_extra_steps", "validation_split_loop_two_epochs"):  # where, and the loop's slice
        f = report.findings[0]
        part = 8 if _id == "validation_split_loop_extra_steps" else 6
        assert f.steps == [part] and report.first_divergent_step == part, text
        assert "x[:int(len(x) * 0.8)]" in f.fix and "validation_split=0.2" in f.fix, text
    if _id.startswith("average_loss_global_batch_doubled"):  # the batch the fix divides by
        assert "global_batch_size=32)" in report.findings[0].fix, text
    if _id == "mask_ignored_from_first_padded_batch":  # named where the padding first counts
        f = report.findings[0]
        assert f.steps == [1] and f.evidence["masked_run"] == "a" and f.evidence["unmasked_mean_over_all_entries"], text
        assert f.evidence["mask_valid"] < f.evidence["mask_count"], text
    if _id == "clip_per_variable":  # the run that clips by hand, each gradient at 0.05
        ev = report.findings[0].evidence
        assert (ev["hand_clipped_run"], ev["hand_clip"], ev["clip_norm"]) == ("b", "per_variable", 0.05), text
    if _id in ("clip_by_norm_by_hand_vs_global_clipnorm", "clip_by_global_norm_by_hand_vs_clipnorm"):
        f = report.findings[0]
        per_var = _id.startswith("clip_by_norm")
        assert f.evidence["hand_clipped_run"] == "b" and f.evidence["clip_norm"] == k9.CLIP, text
        assert ("clips each gradient to norm 0.5 by hand" if per_var else "clips the global norm to 0.5 by hand") \
            in f.summary, text
        assert ("tf.clip_by_global_norm(grads, 0.5)" if per_var else "tf.clip_by_norm(g, 0.5)") in f.fix, text
        assert ("`clipnorm=0.5`" if per_var else "`global_clipnorm=0.5`") in f.fix, text
    if _id == "validation_split_vs_all_data":  # where the batches part; the data difference explained
        assert report.findings[0].evidence["batches_part_at"] == 6, text
        assert all(f.severity == "info" for f in report.findings if f.kind == "data_mismatch"), text
    if _id == "bn_dropout_moved_by_validation_forward":  # the statistics named beside the random stream
        f = report.findings[0]
        assert f.severity == "error" and f.steps == [1] and "moving statistics took in those batches" in f.summary
        assert f.evidence["step_evidence"][0]["state_departs"]["step"] <= f.steps[0], text
    if _id == "augmentation_dropout_no_training_flag":  # the Dropout, not the model its layers decide for
        assert [d["class"] for d in report.findings[0].evidence["layers"]] == ["Dropout"], text
    if _id == "normalization_adapted_on_other_data":  # the state set before training named
        f = report.findings[0]
        assert len(f.evidence["state_set_before_training"]) == 3 and "adapt()" in (f.fix or ""), text
        # only the state differs: the summary names it once, and says what it is
        first = f.evidence["state_differs"][0]
        assert f.summary.count(first) == 1 and "set before training" in f.summary, text
    if _id == "other_seed_same_data":
        assert "state_set_before_training" not in report.findings[0].evidence, text
    if _id == "freeze_between_fits_without_recompile":  # the run that stops, from which step
        f = report.findings[0]
        assert (f.evidence["stopped_in"], f.evidence["step"]) == ("a", 4) and report.first_divergent_step == 4, text
        assert "compile()" in (f.fix or ""), text
    if _id == "masking_layer_one_run":  # the layer without variables named, the step-0 gap its evidence
        f = report.findings[0]
        assert f.severity == "error" and f.evidence["only_in_a"][0].startswith("Masking"), text
        assert f.evidence["step_evidence"][0]["witness_step"] == 0, text
    if _id == "layernorm_vs_batchnorm":  # one class in place of the other, at the same place
        (la, lb), = report.findings[0].evidence["replaced"]
        assert la.startswith("LayerNormalization") and lb.startswith("BatchNormalization"), text
    if _id == "eq_extra_identity_layer":  # the extra layer named, as context
        f = next(f for f in report.findings if f.kind == "structure_mismatch")
        assert f.severity == "info" and f.evidence["only_in_b"][0].startswith("Activation"), text
    if _id == "class_weight_by_label_position":  # the weights differ, the unweighted losses agree
        f = report.findings[0]
        assert f.evidence["per_sample_losses_agree"] and f.evidence["weight_sums (step, a, b)"][0][0] == 0, text
        assert "tf.gather(weights, y)" in (f.fix or ""), text
    if _id == "ema_one_run":  # agreeing steps, a setting not acted yet
        f = report.findings[0]
        assert f.severity == "warning" and report.first_divergent_step is None, text
        assert "use_ema" in f.evidence["not_acted_yet"], text
    if _id == "amsgrad_one_run":
        # AMSGrad acts where a second-moment estimate shrinks, at step 1 on entries whose gradient
        # fell: the same loss and gradients, other updates (by less than the loss tolerance later)
        f = report.findings[0]
        assert f.severity == "error" and report.first_divergent_step == 1, text
        assert "apply different updates" in f.summary, text
    if _id == "lion_beta_differs":
        # Lion's update is sign(beta_1 m + (1 - beta_1) g): equal at step 0 (m = 0), another sign where
        # the step-1 gradient opposes the step-0 one, so the weights part after step 1 and the
        # gradients at step 2; that departure is the setting's evidence
        f = report.findings[0]
        assert f.severity == "error" and f.evidence["differences (a, b)"] == {"beta_1": [0.9, 0.95]}, text
        assert report.first_divergent_step == 2 and f.evidence["step_evidence"][0]["step"] == 2, text
    if _id == "dropout_layer_left_out":  # the other start said to follow from the extra random layer
        assert "Building Dropout '" in report.findings[0].summary and "draws a seed" in report.findings[0].summary, text
    if _id == "ema_one_run":
        assert "finalize_variable_values" in report.findings[0].summary, text
    if _id in ("eq_cross_entropy_for_kl_divergence", "eq_poisson_full_log_likelihood"):  # measured, as context
        f = next(f for f in report.findings if f.kind in ("loss_mismatch", "gradient_mismatch"))
        assert f.evidence["same_updates"]["losses_differ"], text
    if _id == "autoencoder_summed_over_pixels":  # the 64 pixels, not the batch
        assert str(report.findings[0].evidence.get("matches") or "").startswith("the number of outputs"), text
    if _id == "cosine_similarity_sum_reduction":
        assert str(report.findings[0].evidence.get("matches") or "").startswith("the batch size"), text
    if _id == "temperature_not_applied":  # the variable outside the model named
        assert any("temperature" in v for v in report.findings[0].variables), text
    if _id == "kl_divergence_arguments_swapped":  # the run whose call is swapped, not a label transform
        f = report.findings[0]
        assert list(f.evidence["differences (a, b)"]["arguments swapped"]) == [False, True], text
        assert "loss(y_true, y_pred)` in run b" in (f.fix or ""), text
    if _id == "adamw_exclusions_one_run":  # equal recorded configurations: the per-variable setting named
        f = report.findings[0]
        assert f.evidence["unrecorded_setting"]["configs_equal"] and "exclude_from_weight_decay" in (f.fix or ""), text
        assert f.variables and all(v.rsplit("/", 1)[-1] in ("gamma", "beta", "bias") for v in f.variables), text
    if _id == "permute_left_out":  # the layer without variables named
        assert report.findings[0].evidence["only_in_a"][0].startswith("Permute"), text
    if _id == "rate_decayed_each_epoch_in_loop":  # the rates part at step 8, where no update was compared
        f = report.findings[0]
        assert f.severity == "error" and report.first_divergent_step == 8, text
    if _id == "maxnorm_one_run":  # the constraint, with the step's other update as its evidence
        f = report.findings[0]
        assert f.evidence["differences"][0]["argument"] == "kernel_constraint" and f.evidence["step_evidence"], text
        assert not any(g.kind == "optimizer_mismatch" for g in report.findings), text
    if _id == "l1_for_l2":  # another kind of penalty, not another factor
        f = report.findings[0]
        assert "regularization" in f.evidence and "another kind" in f.summary, text
        assert not any(g.kind == "regularization_mismatch" for g in report.findings), text
    if _id == "bias_regularized_in_one_run":
        assert report.findings[0].evidence["differences"][0]["argument"] == "bias_regularizer", text
    if _id in ("causal_mask_forgotten", "eq_causal_attention_fit_vs_loop"):  # attention without dropout
        assert all(g.severity == "info" for g in report.findings if g.kind == "training_mode_mismatch"), text
    if _id == "lr_scheduler_callback_epoch_late":  # the callback named as what moves run b's rate
        assert "LearningRateScheduler callback (changes once" in (report.findings[0].fix or ""), text
    if _id == "lambda_other_constant":  # the functions shown as the code they were written as
        d = report.findings[0].evidence["differences"][0]
        assert (d["argument"], d["a"], d["b"]) == ("function", "lambda t: t * 0.5", "lambda h: h * 0.25"), text
    if _id == "loss_factor_in_learning_rate_adam":  # the rates' ratio named, and why it does not carry over
        f = report.findings[0]
        assert f.evidence["matches"].startswith("the ratio of the runs' learning rates"), text
        assert "adaptive optimizer" in (f.fix or ""), text
    if _id == "bn_gradients_over_all_weights":  # the layer's own writes are not the script's
        assert not any(g.kind == "weights_assigned" for g in report.findings), text
    if _id == "l2_penalty_before_tape":  # kernels against biases of the same layers: a penalty, not a cut
        assert report.findings[0].evidence.get("kernels_only") is True, text
    if _id in ("clip_unreached_by_hand", "clip_unreached_by_hand_eagerly"):  # the hand clip recorded, not guessed
        f = next(g for g in report.findings if g.kind == "optimizer_mismatch")
        assert "clipped_by_hand" in f.evidence and f.severity == "info", text
    if _id == "labels_rounded_float16":  # the same rows rounded, not labels of other rows
        f = report.findings[0]
        assert "each rounded in one run" in f.summary and "float16" in (f.fix or ""), text
    if _id == "labels_shifted_one_row":
        assert "only the labels differ" in report.findings[0].summary, text
    if _id == "gan_fit_against_loop":  # one optimizer's steps, not micro-batches accumulated by hand
        summary = report.findings[0].summary
        assert "Two optimizers take turns" in summary and "micro-batches" not in summary, text
    if _id == "reshuffled_alike_fit_vs_loop":  # both pipelines alike: the iterators, not the arguments
        said = " ".join(g.summary + " " + (g.fix or "") for g in report.findings if g.kind == "data_mismatch")
        assert "created a different number of iterators" in said and "reshuffle_each_iteration=False" in said, text
        assert "verdict: NOT_COMPARABLE after step 3 (steps 0 to 3 are equivalent" in text, text  # how far they agree
    if _id == "reshuffled_each_epoch":  # the argument that differs, not the seed both share
        f = report.findings[0]
        assert "reshuffle_each_iteration=False in run a, True in run b" in (f.fix or ""), text


CHECKS = [
    ("head_fine_tuned_after_fit", n12.fit_then_head_fine_tuned, "equivalent", None),
    ("numpy_round_trip_zero_gradients", n12.tape_numpy_round_trip_zeros, "diverged", "zero_gradient"),
    ("loss_negated", n12.tape_digits_loss_negated, "diverged", "gradient_sign"),
    # an autoencoder whose decoder's variables are left out of tape.gradient and apply_gradients
    ("autoencoder_decoder_left_out", n12.tape_autoencoder_decoder_left_out, "diverged", "missing_gradient"),
    ("autoencoder_both_trained", n12.tape_autoencoder_both_trained, "equivalent", None),
    # binary cross-entropy on labels coded 1/2
    ("binary_labels_coded_12", n12.fit_binary_labels_12, "diverged", "loss_mismatch"),
    ("binary_labels_coded_01", n12.fit_binary_labels_01, "equivalent", None),
    # (N, 1) labels against (N, T, 1) predictions in Keras mse: return_sequences=True left on
    ("lstm_return_sequences_left_on", n12.fit_lstm_return_sequences_left_on, "diverged", "shape_broadcast"),
    ("lstm_one_output_per_sequence", n12.fit_lstm_one_output_per_sequence, "equivalent", None),
    # fine-tuning: unfrozen after compile() without compiling again, or with it
    ("unfrozen_without_compile", n12.fit_tf_keras_unfrozen_without_compile, "diverged", "trainable_mismatch"),
    ("unfrozen_and_compiled", n12.fit_tf_keras_unfrozen_and_compiled, "equivalent", None),
    ("gradients_clipped_to_zero", n12.tape_digits_gradients_clipped_to_zero, "diverged", "zero_gradient"),
    # weights set back to the initialization every epoch, or the best epoch's restored at the end
    ("weights_reset_each_epoch", n12.fit_digits_weights_reset_each_epoch, "diverged", "weights_replaced"),
    ("best_weights_restored", n12.fit_digits_best_weights_kept, "equivalent", None),
    # fit(class_weight=...) into a custom train_step that drops or passes the weights
    ("train_step_drops_class_weights", n12.fit_train_step_drops_class_weights, "diverged", "sample_weighting"),
    ("train_step_keeps_class_weights", n12.fit_train_step_keeps_class_weights, "equivalent", None),
    ("logits_read_as_probabilities", n12.fit_digits_logits_as_probabilities, "diverged", "loss_mismatch"),
    ("train_step_broadcast_unknown_batch", n12.fit_train_step_broadcast_loss, "diverged", "shape_broadcast"),
    ("penalty_gradients_added", n12.tape_penalty_gradients_added, "equivalent", None),
    ("penalty_gradients_added_eagerly", n12.tape_penalty_gradients_added_eagerly, "equivalent", None),
    # a loss summed and divided by the full batch's size: the last, partial batch of each epoch weighs less
    ("partial_batch_sum_over_full_batch", l10.tape_digits_partial_batch_fixed_divisor, "diverged", "loss_scale"),
    ("partial_batch_mean", l10.tape_digits_partial_batch_mean, "equivalent", None),
    ("partial_batch_reduction_none", n12.tape_digits_partial_batch_reduction_none, "diverged", "loss_scale"),
    # nothing trains: the forward pass before the tape (zeros for None), a learning rate of 0
    ("forward_pass_before_the_tape", n12.tape_forward_before_the_tape, "diverged", "zero_gradient"),
    ("learning_rate_zero", n12.tape_learning_rate_zero, "diverged", "zero_learning_rate"),
    ("schedule_reaches_zero_early", n12.tape_schedule_decays_to_zero_early, "diverged", "zero_learning_rate"),
    ("schedule_ends_at_zero", n12.tape_schedule_ends_at_zero, "equivalent", None),
    # keras.io's `base(inputs, training=False)`: Keras 3's fit() passes training=True over it once
    # the base is unfrozen (its BatchNormalization then updates); while frozen it stays in inference mode
    ("wired_inference_overridden_by_fit", n12.fit_transfer_then_fine_tune, "diverged", "training_mode_mismatch"),
    # frozen from the start, the base never trained: no override; its BatchNormalization (as created,
    # statistics 0 and 1) in a frozen block is context; pretrained first, nothing to say
    ("wired_inference_while_frozen", n12.fit_transfer_head_only, "equivalent", "training_mode_mismatch"),
    ("wired_inference_after_pretraining", n12.fit_base_pretrained_then_head_only, "equivalent", None),
    # Dropout's call defaults to training=False, which Keras fills into every functional node: no override
    ("functional_dropout_default_not_wired", n12.fit_functional_dropout, "equivalent", None),
    # eagerly the predictions' values say what they are: probabilities (rows summing to 1) or logits
    ("eager_softmax_twice", n12.tape_eager_softmax_twice, "diverged", "loss_mismatch"),
    ("eager_logits_as_probabilities", n12.tape_eager_logits_as_probabilities, "diverged", "loss_mismatch"),
    ("eager_softmax_probabilities", n12.tape_eager_softmax_probabilities, "equivalent", None),
    ("second_loss_gradients_dropped", l10.tape_second_loss_gradients_dropped, "diverged", "discarded_gradient"),
    ("second_loss_gradients_added", l10.tape_two_losses_gradients_added, "equivalent", None),
    ("per_sample_vector", s.tape_per_sample_loss, "diverged", "non_scalar_loss"),
    ("no_training_flag", s.tape_bn_dropout_no_training_flag, "diverged", "training_mode_mismatch"),
    ("nan_after_saturation", s.tape_hand_log_loss, "diverged", "numerics"),
    ("clean_fit", s.fit_digits_sgd_sparse, "equivalent", None),
    ("applied_twice", s.tape_applied_twice, "diverged", "repeated_step"),
    ("step_called_twice", s.tape_step_called_twice, "diverged", "repeated_step"),
    ("full_batch_is_not_a_repeat", s.tape_full_batch, "equivalent", None),
    ("two_optimizers_take_turns_on_a_batch", s.tape_two_optimizers_one_batch, "equivalent", None),
    # the loss holds sum(model.losses) twice, or not at all, next to the Keras loss's data loss
    ("reg_losses_added_twice", s.fit_l2_train_step_adds_twice, "diverged", "regularization_mismatch"),
    ("reg_losses_left_out", s.tape_l2_forgotten, "diverged", "regularization_mismatch"),
    ("regularized_fit", s.fit_l2, "equivalent", None),
    ("hand_penalty_on_top", s.tape_l2_by_hand_other_factor, "equivalent", None),
    # a compiled accuracy metric that cannot fit the labels silently reports nonsense
    ("metric_accuracy_class_on_probabilities", s.fit_metric_accuracy_class, "diverged", "metric_mismatch"),
    ("metric_categorical_on_integer_labels", s.fit_metric_categorical_on_sparse, "diverged",
     "metric_mismatch"),
    ("metric_binary_on_one_class_labels", s.fit_metric_binary_on_multiclass, "diverged", "metric_mismatch"),
    ("metric_resolved_from_labels", s.fit_metric_sparse, "equivalent", None),
    # "accuracy" resolved from the shapes: CategoricalAccuracy for multi-label (yes/no per output) labels
    ("metric_accuracy_resolved_for_multilabel", s.fit_multilabel_accuracy, "diverged", "metric_mismatch"),
    ("grads_zipped_reordered_eager", s.tape_grads_zipped_reordered_eager, "diverged", "misapplied_gradient"),
    ("grads_zipped_reordered_function", s.tape_grads_zipped_reordered, "diverged", "misapplied_gradient"),
    ("one_output_loss_differentiated", s.tape_one_output_loss_differentiated, "diverged",
     "loss_not_differentiated"),
    ("one_output_loss_differentiated_eager", s.tape_one_output_loss_differentiated_eager, "diverged",
     "loss_not_differentiated"),
    ("stop_gradient_intermediate", s.tape_stop_gradient_intermediate, "diverged", "missing_gradient"),
    # a GRU without dropout in inference mode computes what it would in training mode: context only
    ("gru_without_dropout_in_inference_mode", m.tape_gru_text_no_training_flag, "equivalent",
     "training_mode_mismatch"),
    ("gru_with_dropout_in_inference_mode", m.tape_gru_text_dropout_no_training_flag, "diverged",
     "training_mode_mismatch"),
    ("model_built_each_epoch", m.tape_digits_model_built_each_epoch, "diverged", "model_recreated"),
    # model(x) without training=: the augmentation layers inside run in training mode all the same
    ("augmentation_layers_decide_their_mode", x.tape_augmented_conv_no_training_flag, "equivalent", None),
    ("augmentation_with_dropout_in_inference_mode", x.tape_augmented_conv_dropout_no_training_flag, "diverged",
     "training_mode_mismatch"),
    # scripts_f.py
    ("lstm_recurrent_dropout_in_inference_mode", f4.tape_lstm_rows_recurrent_dropout_no_training_flag, "diverged",
     "training_mode_mismatch"),
    ("spatial_dropout_in_inference_mode", f4.tape_conv1d_spatial_dropout_no_training_flag, "diverged",
     "training_mode_mismatch"),
    ("train_step_with_metrics", f4.fit_train_step_with_metrics, "equivalent", None),
    ("activity_regularizer_left_out", f4.tape_activity_regularizer_left_out, "diverged", "regularization_mismatch"),
    ("add_loss_left_out", f4.tape_add_loss_left_out, "diverged", "regularization_mismatch"),
    ("ema_fit", f4.fit_adam_ema, "equivalent", None),
    # scripts_h.py
    ("attention_without_dropout_in_inference_mode", h6.tape_next_row_no_training_flag, "equivalent",
     "training_mode_mismatch"),
    ("maxnorm_constraint_fit", h6.fit_bc_maxnorm, "equivalent", None),
    # scripts_l.py
    # the gradients of scale_loss(loss) applied by the wrapper's inner optimizer keep the loss scale
    ("scaled_gradients_applied_by_inner_adam", j8.tape_mixed_scaled_loss_inner_optimizer_applies, "diverged",
     "loss_scaling"),
    ("scaled_gradients_applied_by_inner_sgd", j8.tape_mixed_scaled_loss_inner_sgd_applies, "diverged",
     "loss_scaling"),
    ("scaled_loss_applied_by_wrapper", j8.tape_mixed_scaled_loss_adam, "equivalent", None),
    ("scaled_gradients_unscaled_by_hand", l10.tape_mixed_scaled_loss_unscaled_by_hand, "equivalent", None),
    # a GRU tagger over Embedding(mask_zero=True): the loss's mean counts the padding, or only the valid entries
    ("loss_mean_counts_padding", i7.tape_masked_gru_tagger_mask_ignored, "diverged", "sample_weighting"),
    ("masked_loss_fit", i7.fit_masked_gru_tagger, "equivalent", None),
    ("masked_loss_object_in_tape", l10.tape_masked_gru_tagger_loss_object, "equivalent", None),
    ("masked_loss_by_hand", i7.tape_masked_gru_tagger_mask_by_hand, "equivalent", None),
    # training mode outside the steps: a mean teacher's own noise (a model no optimizer trains), or the
    # trained model's validation pass
    ("mean_teacher_in_training_mode_outside_the_tape", l10.tape_mean_teacher_ema, "equivalent",
     "training_outside_steps"),
    ("validation_forward_in_training_mode", x.tape_bn_drop_validation_forward_in_training_mode, "diverged",
     "training_outside_steps"),
    ("mean_teacher_student_validated_in_training_mode", l10.tape_mean_teacher_student_validated_in_training_mode,
     "diverged", "training_outside_steps"),
    # scripts_o.py
    ("binary_on_class_indices", o13.fit_binary_on_class_indices, "diverged", "loss_mismatch"),
    ("hinge_on_plus_minus_one", o13.fit_hinge_on_plus_minus_one, "equivalent", None),
    # a head the steps never call, its None gradients dropped by the script: a warning, not an error
    ("auxiliary_head_unused", o13.tape_auxiliary_head_unused, "diverged", "missing_gradient"),
    ("bn_frozen_from_scratch", o13.fit_bn_frozen_from_scratch, "diverged", "training_mode_mismatch"),
    ("bn_trained_from_scratch", o13.fit_bn_trained_from_scratch, "equivalent", None),
    ("mixed_loss_never_scaled", o13.tape_mixed_loss_never_scaled, "diverged", "loss_scaling"),
    ("mixed_loss_scaled", o13.tape_mixed_loss_scaled, "equivalent", None),
    ("gradients_clipped_to_0_1", o13.tape_gradients_clipped_to_0_1, "diverged", "gradient_sign"),
    ("gradients_clipped_symmetrically", o13.tape_gradients_clipped_symmetrically, "equivalent", None),
    ("sigmoid_under_categorical_ce", o13.fit_sigmoid_under_categorical_ce, "diverged", "loss_mismatch"),
    ("softmax_under_categorical_ce", o13.fit_softmax_under_categorical_ce, "equivalent", None),
    # context only: Dropout alone sampled after the last step; heads trained at alternate steps
    ("monte_carlo_dropout_after_fit", o13.fit_then_monte_carlo_dropout, "equivalent", "training_outside_steps"),
    ("two_heads_alternate", o13.tape_two_heads_alternate, "equivalent", "missing_gradient"),
    ("head_after_pretraining_fit", o13.tape_head_after_pretraining_fit, "equivalent", None),
    # next(iter(ds)) at every step: the first batch each time; a one-element pipeline is full-batch training
    ("next_iter_every_step", o13.tape_digits_next_iter_every_step, "diverged", "repeated_step"),
    ("whole_pipeline_as_one_batch", o13.tape_digits_whole_pipeline_as_one_batch, "equivalent", None),
    # a separate encoder cut off by tf.stop_gradient, its None gradients dropped: not a teacher
    ("encoder_cut_by_stop_gradient", o13.tape_encoder_cut_by_stop_gradient, "diverged", "missing_gradient"),
    # the metric judged against the latest compile's labels; multi-hot labels are yes/no answers
    ("metric_of_second_compile", o13.fit_pretrained_on_regression_then_class_head, "equivalent", None),
    ("multi_label_under_categorical_ce", o13.fit_multi_label_binary_accuracy_under_categorical_ce, "diverged",
     "loss_mismatch"),
    ("model_rebuilt_each_epoch", o13.fit_model_rebuilt_each_epoch, "diverged", "model_recreated"),
    ("gaussian_log_likelihood_minimised", o13.tape_gaussian_log_likelihood_minimised, "diverged", "numerics"),
    # data sorted by label and never shuffled: one class per batch, class after class; a rare class shuffled is not it
    ("sorted_by_class_tape", o13.tape_four_classes_sorted, "diverged", "unshuffled_data"),
    ("sorted_by_class_fit_one_hot", o13.fit_four_classes_one_hot_sorted, "diverged", "unshuffled_data"),
    ("sorted_data_shuffled_by_pipeline", o13.tape_four_classes_shuffled_by_pipeline, "equivalent", None),
    ("sorted_data_shuffled_by_fit", o13.fit_four_classes_one_hot_shuffled, "equivalent", None),
    ("rare_class_shuffled_small_batches", o13.tape_rare_class_shuffled_small_batches, "equivalent", None),
    # a regression output squashed by a bounded activation: targets it can never reach, or all in range
    ("relu_head_on_standardized_targets", o13.fit_relu_head_on_standardized_targets, "diverged", "loss_mismatch"),
    ("tanh_head_on_standardized_targets", o13.fit_tanh_head_on_standardized_targets, "diverged", "loss_mismatch"),
    ("tanh_head_on_targets_in_range", o13.fit_tanh_head_on_targets_in_range, "equivalent", None),
    ("relu_head_on_nonnegative_targets", o13.fit_relu_head_on_nonnegative_targets, "equivalent", None),
    # a separate feature model called before the tape, its None gradients dropped: it never trains
    ("feature_model_called_before_tape", o13.tape_feature_model_called_before_tape, "diverged", "missing_gradient"),
    ("mixed_scale_loss_called_unused", o13.tape_mixed_scale_loss_called_unused, "diverged", "loss_scaling"),
    ("step_called_again_to_log", o13.tape_digits_step_called_again_to_log, "diverged", "repeated_step"),
    ("step_once_per_batch", o13.tape_digits_step_once_per_batch, "equivalent", None),
    ("binary_accuracy_named_accuracy", o13.fit_binary_accuracy_named_accuracy_on_one_hot, "diverged",
     "metric_mismatch"),
    # a learning rate a thousand times too large: the loss jumps at the first updates
    ("adam_learning_rate_half", o13.fit_digits_adam_learning_rate_half, "diverged", "exploding_loss"),
]


@pytest.mark.slow
@pytest.mark.parametrize("case", CHECKS, ids=[c[0] for c in CHECKS])
def test_check(traced, case):
    """`gradtrace check RUN`: single-run findings of the same engine."""
    from gradtrace.compare import check, render_text

    _id, fn, verdict, top = case
    name = traced.run(fn)
    store = traced.store()
    try:
        report = check(store, name, project="cases")
    finally:
        store.close()
    text = render_text(report, verbose=True)
    assert report.verdict == verdict, text
    if _id == "metric_accuracy_resolved_for_multilabel":  # the fix names the class, not 'accuracy' again
        assert "BinaryAccuracy()" in report.findings[0].fix and "metrics=['accuracy']" not in report.findings[0].fix
    if _id == "gaussian_log_likelihood_minimised":  # the sign named, not a learning rate to lower
        assert "without its minus" in (report.findings[0].fix or ""), text
    if _id == "model_rebuilt_each_epoch":  # three more copies, the first from the second epoch
        assert report.findings[0].evidence["copies"] == 3 and report.findings[0].steps == [12], text
        assert [f.kind for f in report.findings if f.severity != "info"] == ["model_recreated"], text
    if _id == "multi_label_under_categorical_ce":  # BinaryAccuracy fits multi-hot labels: no metric finding
        assert [f.kind for f in report.findings] == ["loss_mismatch"], text
    if _id in ("reg_losses_added_twice", "reg_losses_left_out"):  # how many times the loss holds them
        assert report.findings[0].evidence["count"] == (2 if _id == "reg_losses_added_twice" else 0), text
    if _id == "gru_without_dropout_in_inference_mode":
        assert [f.severity for f in report.findings] == ["info"], text
    if _id == "mean_teacher_student_validated_in_training_mode":  # the student's layers, the teacher's aside
        f = report.findings[0]
        assert f.severity == "warning" and len(f.layers) == 2, text
        assert "its moving statistics took in those batches" in f.summary, text  # the student's BN, named as such
        assert "2 layer(s) of a model the optimizer does not train" in f.summary, text
    if _id == "mean_teacher_in_training_mode_outside_the_tape":  # the teacher's layers, as context only
        assert [f.severity for f in report.findings] == ["info"], text
        assert "layers of a model the optimizer does not train ('sequential" in report.findings[0].summary, text
        assert "a mean teacher's targets" in (report.findings[0].fix or ""), text  # its own fix, not the catalogue's
    if _id == "logits_read_as_probabilities":  # an error naming the setting to change
        f = report.findings[0]
        assert f.severity == "error" and "from_logits=True" in (f.fix or ""), text
    if _id == "partial_batch_sum_over_full_batch":  # the divisor, the partial batch, both epochs' steps
        f = report.findings[0]
        assert f.severity == "warning" and f.steps == [7], text
        assert (f.evidence["batch"], f.evidence["divisor"], f.evidence["partial_steps"]) == (26, 32, 2), text
    if _id == "partial_batch_reduction_none":  # as with reduction="none"
        assert report.findings[0].evidence["divisor"] == 32 and report.findings[0].steps == [7], text
    if _id in ("forward_pass_before_the_tape", "learning_rate_zero", "schedule_reaches_zero_early"):
        assert report.findings[0].severity == "error", text  # nothing (or almost nothing) trains
    if _id == "nan_after_saturation":  # a log of a saturated probability, not a diverging training
        assert "`tf.math.xlogy`" in (report.findings[0].fix or ""), text
    if _id == "wired_inference_overridden_by_fit":  # from the fine-tuning phase's first step
        f = report.findings[0]
        wired = f.evidence["wired_inference_overridden"]
        assert f.steps == [s.STEPS] and list(wired) == ["base"] and len(wired["base"]) == 1, text
    if _id == "eager_softmax_twice":
        assert "applies a second softmax" in report.findings[0].summary, text
    if _id == "eager_logits_as_probabilities":
        assert "values outside [0, 1]" in report.findings[0].summary, text
    if _id == "schedule_reaches_zero_early":
        assert report.findings[0].evidence["first_zero_step"] == 1, text
    if _id == "loss_mean_counts_padding":  # the mask's counts, a warning, and the fix
        f = report.findings[0]
        assert (f.severity, f.evidence["valid"], f.evidence["total"]) == ("warning", 167, 240), text
        assert "tf.reduce_sum(loss * mask) / tf.reduce_sum(mask)" in (f.fix or ""), text
    if _id == "wired_inference_while_frozen":  # the untrained frozen layer, not the wired override
        assert len(report.findings) == 1 and "wired_inference_overridden" not in report.findings[0].evidence, text
        f = report.findings[0]
        assert "never learned any" in f.summary and f.severity == "info" and f.evidence.get("frozen_block"), text
    if _id == "adam_learning_rate_half":  # the loss and the gradient norm both several times their first
        ev = report.findings[0].evidence
        assert ev["loss_factor"] >= 4 and ev["grad_norm_factor"] >= 4 and ev["learning_rate"] == 0.5, text
    if _id == "binary_accuracy_named_accuracy":  # the script chose the class: not said to be Keras's doing
        fix = report.findings[0].fix or ""
        assert "CategoricalAccuracy()" in fix and "Keras resolved" not in fix, text
    if _id == "step_called_again_to_log":
        f = report.findings[0]
        assert f.severity == "warning" and f.evidence["steps"] == [1, 5, 9], text
    if _id == "mixed_scale_loss_called_unused":  # said as called, its result not differentiated
        assert "then differentiate `loss`" in report.findings[0].summary, text
    if _id == "feature_model_called_before_tape":  # asked for, never watched, never updated
        f = report.findings[0]
        assert f.evidence.get("unwatched") and len(f.variables) == 2 and "keep their initial values" in f.summary, text
    if _id == "auxiliary_head_unused":  # never read under the tape: named as such, a warning
        f = report.findings[0]
        assert f.severity == "warning" and f.evidence.get("unwatched") and len(f.variables) == 2, text
    if _id in ("bn_frozen_from_scratch", "sigmoid_under_categorical_ce"):
        assert report.findings[0].severity == "warning", text
    if _id in ("mixed_loss_never_scaled", "gradients_clipped_to_0_1", "binary_on_class_indices"):
        assert report.findings[0].severity == "error", text
    if _id == "binary_on_class_indices":  # the partial batch of 0s and 1s is no counter-example
        assert report.findings[0].evidence["checked"] == s.STEPS + 1, text
    if _id.startswith("sorted_by_class"):  # the classes in the order the batches held them
        f = report.findings[0]
        assert f.severity == "warning" and f.evidence["class_order"] == [0, 1, 2, 3], text
        assert f.evidence["single_class_batches"] >= 0.8 * f.evidence["batches"], text
    if _id.endswith("_head_on_standardized_targets"):  # the activation and its range named
        f = report.findings[0]
        relu = _id.startswith("relu")
        assert f.evidence["activation"] == ("relu" if relu else "tanh"), text
        assert f.evidence["range"] == ([0.0, None] if relu else [-1.0, 1.0]), text
        assert f.severity == ("error" if relu else "warning") and "activation=None" in (f.fix or ""), text
    if _id in ("monte_carlo_dropout_after_fit", "two_heads_alternate"):
        assert [f.severity for f in report.findings] == ["info"], text
    if top is None:
        assert not report.findings, text
    else:
        assert report.findings[0].kind == top, text


@pytest.mark.slow
def test_a_run_that_failed_where_the_other_goes_on_is_named_with_its_error(traced):
    """Fine-tuning whose second phase reuses the first phase's optimizer: Keras 3 raises at the first
    step after the unfreeze. The finding says run b failed there (its error's first line, not a
    tensor's repr) and the fix is the optimizer, not a compile()."""
    import gradtrace
    from gradtrace.compare import compare, render_text

    good = traced.run(n12.tape_fine_tune_new_optimizer)
    with pytest.raises(ValueError, match="Unknown variable"):
        with gradtrace.trace(run="fine_tune_reused_optimizer", project="cases", store=traced.url):
            n12.tape_fine_tune_reused_optimizer()
    store = traced.store()
    try:
        report = compare(store, good, "fine_tune_reused_optimizer", project="cases")
    finally:
        store.close()
    text = render_text(report, verbose=True)
    f = report.findings[0]
    assert f.kind == "trainable_mismatch" and "run b failed after its step 7 (ValueError: Unknown variable" in f.summary, text
    assert "before a new optimizer's first step" in f.summary and "new optimizer" in (f.fix or ""), text
    why = " ".join(s["why"] for s in report.skipped)
    assert "failed after 8 step(s) (ValueError" in why and "\n" not in why and len(why) < 600, text
