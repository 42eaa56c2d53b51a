module ringfiber.example/peers

go 1.19
