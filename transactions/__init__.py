"""Starting, reading and acting on transactions through Temporal: the one service the CLI,
the backend API (/api), the demo and the proof tools call. It sits above the workflows (it
starts them and reads their views) and below every entry point."""

from transactions.act import ACTIONS as ACTIONS
from transactions.act import operator_action as operator_action
from transactions.read import TransactionCounts as TransactionCounts
from transactions.read import TransactionRow as TransactionRow
from transactions.read import count_transactions as count_transactions
from transactions.read import list_transactions as list_transactions
from transactions.read import parse_provider as parse_provider
from transactions.read import payment_view as payment_view
from transactions.read import refund_view as refund_view
from transactions.read import transactions_query as transactions_query
from transactions.read import withdrawal_view as withdrawal_view
from transactions.start import build_order as build_order
from transactions.start import build_withdrawal as build_withdrawal
from transactions.start import chosen_provider as chosen_provider
from transactions.start import settlement_timing as settlement_timing
from transactions.start import start_payment as start_payment
from transactions.start import start_refund as start_refund
from transactions.start import start_withdrawal as start_withdrawal
