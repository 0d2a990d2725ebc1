<?php
// A merchant backend starting a payment through tempay's API, the way a PHP shop does it
// with curl_post. Usage: TEMPAY_API_KEY=... php client.php BASE_URL ORDER_ID AMOUNT CURRENCY
// Prints {"status": <HTTP status>, "body": <the JSON answer>} on one line.

function curl_post($url, $data, $key)
{
    $headers = [
        'Content-Type: application/json',
        'Accept: application/json',
        'Authorization: Bearer ' . $key,
    ];
    if (function_exists('curl_init')) {
        $ch = curl_init();
        curl_setopt($ch, CURLOPT_URL, $url);
        curl_setopt($ch, CURLOPT_POST, 1);
        curl_setopt($ch, CURLOPT_POSTFIELDS, $data);
        curl_setopt($ch, CURLOPT_HTTPHEADER, $headers);
        curl_setopt($ch, CURLOPT_RETURNTRANSFER, 1);
        curl_setopt($ch, CURLOPT_TIMEOUT, 60);
        $body = curl_exec($ch);
        if ($body === false) {
            fwrite(STDERR, 'curl error: ' . curl_error($ch) . "\n");
            exit(2);
        }
        $status = curl_getinfo($ch, CURLINFO_RESPONSE_CODE);
        curl_close($ch);
        return [$status, $body];
    }
    // Without the curl extension: a stream context does the same POST.
    $context = stream_context_create(['http' => [
        'method' => 'POST',
        'header' => implode("\r\n", $headers),
        'content' => $data,
        'timeout' => 60,
        'ignore_errors' => true,  // read 4xx bodies too
    ]]);
    $body = file_get_contents($url, false, $context);
    if ($body === false) {
        fwrite(STDERR, "request to $url failed\n");
        exit(2);
    }
    preg_match('{HTTP/\S+ (\d{3})}', $http_response_header[0], $match);
    return [(int) $match[1], $body];
}

if ($argc !== 5) {
    fwrite(STDERR, "usage: php client.php BASE_URL ORDER_ID AMOUNT CURRENCY\n");
    exit(64);
}
[, $base, $orderId, $amount, $currency] = $argv;
$key = getenv('TEMPAY_API_KEY') ?: '';

// Amounts travel as strings: "10.00", never 10.0.
$order = [
    'order_id' => $orderId,
    'amount' => $amount,
    'currency' => $currency,
    'subject' => 'PHP order ' . $orderId,
    'return_url' => 'https://shop.example/orders/' . $orderId,
];
[$status, $body] = curl_post(rtrim($base, '/') . '/api/payments', json_encode($order), $key);
echo json_encode(['status' => $status, 'body' => json_decode($body, true)]), "\n";
