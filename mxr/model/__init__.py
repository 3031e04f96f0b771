"""The Mask^X R-CNN model: torchvision's Mask R-CNN plus weight transfer, stop-grad and MLP fusion."""
